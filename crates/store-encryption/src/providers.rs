//! The value transformers of kube-apiserver's encryption at rest
//! (k8s.io/apiserver/pkg/storage/value and value/encrypt/{aes,identity}),
//! with the same wire format, so a store written by one reads in the other:
//!
//! - `aescbc`: `k8s:enc:aescbc:v1:<key name>:` + 16-byte IV + AES-CBC
//!   ciphertext of the value with PKCS#7 padding;
//! - `aesgcm`: `k8s:enc:aesgcm:v1:<key name>:` + 12-byte nonce + AES-GCM
//!   ciphertext and tag, the store key as additional authenticated data
//!   (a value copied under another key does not decrypt);
//! - `identity`: the value itself; it refuses to read a `k8s:enc:` value.
//!
//! The first provider (and its first key) encrypts; on read every provider
//! whose prefix the value starts with is tried in order, as
//! `value.NewPrefixTransformers` does.

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

pub const AESCBC_PREFIX: &str = "k8s:enc:aescbc:v1:";
pub const AESGCM_PREFIX: &str = "k8s:enc:aesgcm:v1:";
/// What every encrypted value starts with.
pub const ENCRYPTED_PREFIX: &str = "k8s:enc:";
const BLOCK: usize = 16;
const GCM_NONCE: usize = 12;

/// Why a value cannot be encrypted or decrypted (Kubernetes' messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("no matching prefix found")]
    NoMatchingPrefix,
    #[error("no matching key was found for the provided AES transformer")]
    NoMatchingKey,
    #[error("identity transformer tried to read encrypted data")]
    IdentityReadEncrypted,
    #[error("the stored data was shorter than the required size")]
    TooShort,
    #[error("the stored data is not a multiple of the block size")]
    InvalidBlockSize,
    #[error("invalid PKCS7 data (empty or not padded)")]
    InvalidPkcs7Data,
    #[error("invalid padding on input")]
    InvalidPkcs7Padding,
    #[error("cipher: message authentication failed")]
    Authentication,
    #[error("unable to read sufficient random bytes")]
    Random,
    #[error("encryption failed")]
    Seal,
    /// Several providers matched the prefix and all failed.
    #[error("[{}]", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    All(Vec<TransformError>),
}

/// An AES key of one of the three sizes.
enum AesKey {
    A128(Box<aes::Aes128>),
    A192(Box<aes::Aes192>),
    A256(Box<aes::Aes256>),
}

impl AesKey {
    fn new(secret: &[u8]) -> Option<AesKey> {
        Some(match secret.len() {
            16 => AesKey::A128(Box::new(aes::Aes128::new_from_slice(secret).ok()?)),
            24 => AesKey::A192(Box::new(aes::Aes192::new_from_slice(secret).ok()?)),
            32 => AesKey::A256(Box::new(aes::Aes256::new_from_slice(secret).ok()?)),
            _ => return None,
        })
    }

    fn encrypt(&self, block: &mut [u8]) {
        let b = aes::Block::from_mut_slice(block);
        match self {
            AesKey::A128(k) => k.encrypt_block(b),
            AesKey::A192(k) => k.encrypt_block(b),
            AesKey::A256(k) => k.encrypt_block(b),
        }
    }

    fn decrypt(&self, block: &mut [u8]) {
        let b = aes::Block::from_mut_slice(block);
        match self {
            AesKey::A128(k) => k.decrypt_block(b),
            AesKey::A192(k) => k.decrypt_block(b),
            AesKey::A256(k) => k.decrypt_block(b),
        }
    }
}

/// AES-CBC with PKCS#7 padding and a random IV, as aes.NewCBCTransformer.
struct Cbc(AesKey);

impl Cbc {
    fn encrypt(&self, data: &[u8]) -> Result<Vec<u8>, TransformError> {
        let padding = BLOCK - data.len() % BLOCK;
        let mut out = vec![0u8; BLOCK];
        SystemRandom::new()
            .fill(&mut out)
            .map_err(|_| TransformError::Random)?;
        out.extend_from_slice(data);
        out.resize(out.len() + padding, padding as u8);
        let mut prev = [0u8; BLOCK];
        prev.copy_from_slice(&out[..BLOCK]);
        for block in out[BLOCK..].chunks_exact_mut(BLOCK) {
            for (b, p) in block.iter_mut().zip(prev.iter()) {
                *b ^= p;
            }
            self.0.encrypt(block);
            prev.copy_from_slice(block);
        }
        Ok(out)
    }

    fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, TransformError> {
        if data.len() < BLOCK {
            return Err(TransformError::TooShort);
        }
        let (iv, body) = data.split_at(BLOCK);
        if body.len() % BLOCK != 0 {
            return Err(TransformError::InvalidBlockSize);
        }
        let mut out = body.to_vec();
        let mut prev = [0u8; BLOCK];
        prev.copy_from_slice(iv);
        for block in out.chunks_exact_mut(BLOCK) {
            let mut this = [0u8; BLOCK];
            this.copy_from_slice(block);
            self.0.decrypt(block);
            for (b, p) in block.iter_mut().zip(prev.iter()) {
                *b ^= p;
            }
            prev = this;
        }
        let Some(&pad) = out.last() else {
            return Err(TransformError::InvalidPkcs7Data);
        };
        let pad_len = usize::from(pad);
        if pad_len == 0 || pad_len > out.len() {
            return Err(TransformError::InvalidPkcs7Data);
        }
        let size = out.len() - pad_len;
        if out[size..].iter().any(|b| *b != pad) {
            return Err(TransformError::InvalidPkcs7Padding);
        }
        out.truncate(size);
        Ok(out)
    }
}

/// AES-GCM with a random 96-bit nonce and the store key as additional data.
struct Gcm(LessSafeKey);

impl Gcm {
    fn encrypt(&self, data: &[u8], key: &str) -> Result<Vec<u8>, TransformError> {
        let mut nonce = [0u8; GCM_NONCE];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| TransformError::Random)?;
        let mut sealed = data.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| TransformError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn decrypt(&self, data: &[u8], key: &str) -> Result<Vec<u8>, TransformError> {
        if data.len() < GCM_NONCE {
            return Err(TransformError::TooShort);
        }
        let (nonce, sealed) = data.split_at(GCM_NONCE);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| TransformError::TooShort)?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut sealed)
            .map_err(|_| TransformError::Authentication)?;
        Ok(plain.to_vec())
    }
}

enum Cipher {
    Cbc(Cbc),
    Gcm(Gcm),
}

/// One named key of an AES provider.
struct NamedKey {
    name: String,
    cipher: Cipher,
}

/// The kind of a provider, as the configuration names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    AesCbc,
    AesGcm,
    Identity,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::AesCbc => "aescbc",
            ProviderKind::AesGcm => "aesgcm",
            ProviderKind::Identity => "identity",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            ProviderKind::AesCbc => AESCBC_PREFIX,
            ProviderKind::AesGcm => AESGCM_PREFIX,
            ProviderKind::Identity => "",
        }
    }
}

/// One provider of a resource's list.
pub struct Provider {
    kind: ProviderKind,
    keys: Vec<NamedKey>,
}

/// Why a provider cannot be built from its keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{provider} provider has no valid keys")]
    NoKeys { provider: &'static str },
    #[error("key with invalid name provided")]
    NoName,
    #[error("key {0} has no provided secret")]
    NoSecret(String),
    #[error("could not obtain secret for named key {name}: {reason}")]
    Base64 { name: String, reason: String },
    #[error(
        "error while creating cipher for named key {name}: invalid key size {size} for {provider} (16, 24 or 32 bytes for aescbc; 16 or 32 for aesgcm)"
    )]
    Size {
        name: String,
        size: usize,
        provider: &'static str,
    },
}

impl Provider {
    pub fn identity() -> Provider {
        Provider {
            kind: ProviderKind::Identity,
            keys: Vec::new(),
        }
    }

    /// An AES provider from (name, raw secret) pairs, the first key encrypting.
    pub fn aes(kind: ProviderKind, keys: &[(String, Vec<u8>)]) -> Result<Provider, KeyError> {
        let provider = kind.name();
        if keys.is_empty() {
            return Err(KeyError::NoKeys { provider });
        }
        let mut out = Vec::with_capacity(keys.len());
        for (name, secret) in keys {
            if name.is_empty() {
                return Err(KeyError::NoName);
            }
            if secret.is_empty() {
                return Err(KeyError::NoSecret(name.clone()));
            }
            let size_err = || KeyError::Size {
                name: name.clone(),
                size: secret.len(),
                provider,
            };
            let cipher = match kind {
                ProviderKind::AesCbc => Cipher::Cbc(Cbc(AesKey::new(secret).ok_or_else(size_err)?)),
                ProviderKind::AesGcm => {
                    let alg = match secret.len() {
                        16 => &AES_128_GCM,
                        32 => &AES_256_GCM,
                        _ => return Err(size_err()),
                    };
                    let key = UnboundKey::new(alg, secret).map_err(|_| size_err())?;
                    Cipher::Gcm(Gcm(LessSafeKey::new(key)))
                }
                ProviderKind::Identity => return Err(KeyError::NoKeys { provider }),
            };
            out.push(NamedKey {
                name: name.clone(),
                cipher,
            });
        }
        Ok(Provider { kind, keys: out })
    }

    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// The key names, the encrypting one first.
    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.name.as_str())
    }

    fn encrypt(&self, key: &str, data: &[u8]) -> Result<Vec<u8>, TransformError> {
        let Some(first) = self.keys.first() else {
            return Ok(data.to_vec());
        };
        let body = match &first.cipher {
            Cipher::Cbc(c) => c.encrypt(data)?,
            Cipher::Gcm(g) => g.encrypt(data, key)?,
        };
        let mut out =
            Vec::with_capacity(self.kind.prefix().len() + first.name.len() + 1 + body.len());
        out.extend_from_slice(self.kind.prefix().as_bytes());
        out.extend_from_slice(first.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts `data` (without the provider prefix). Stale when a key other
    /// than the first one decrypted it.
    fn decrypt(&self, key: &str, data: &[u8]) -> Result<(Vec<u8>, bool), TransformError> {
        if self.kind == ProviderKind::Identity {
            if data.starts_with(ENCRYPTED_PREFIX.as_bytes()) {
                return Err(TransformError::IdentityReadEncrypted);
            }
            return Ok((data.to_vec(), false));
        }
        let mut errors = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            let Some(rest) = data
                .strip_prefix(k.name.as_bytes())
                .and_then(|r| r.strip_prefix(b":"))
            else {
                continue;
            };
            let result = match &k.cipher {
                Cipher::Cbc(c) => c.decrypt(rest),
                Cipher::Gcm(g) => g.decrypt(rest, key),
            };
            match result {
                Ok(plain) => return Ok((plain, i != 0)),
                Err(e) => errors.push(e),
            }
        }
        Err(reduce(errors).unwrap_or(TransformError::NoMatchingKey))
    }

    /// The name of the key of this provider that wrote `data` (with its
    /// provider prefix), if it is one of them.
    fn key_of(&self, data: &[u8]) -> Option<&str> {
        let rest = data.strip_prefix(self.kind.prefix().as_bytes())?;
        if self.kind == ProviderKind::Identity {
            return (!data.starts_with(ENCRYPTED_PREFIX.as_bytes())).then_some("");
        }
        self.keys
            .iter()
            .find(|k| {
                rest.strip_prefix(k.name.as_bytes())
                    .is_some_and(|r| r.starts_with(b":"))
            })
            .map(|k| k.name.as_str())
    }
}

fn reduce(mut errors: Vec<TransformError>) -> Option<TransformError> {
    match errors.len() {
        0 => None,
        1 => errors.pop(),
        _ => Some(TransformError::All(errors)),
    }
}

/// A resource's providers in order: the first one writes, all read.
pub struct Providers(pub Vec<Provider>);

impl Providers {
    /// The stored form of `data` under store key `key`.
    pub fn encrypt(&self, key: &str, data: &[u8]) -> Result<Vec<u8>, TransformError> {
        match self.0.first() {
            Some(p) => p.encrypt(key, data),
            None => Ok(data.to_vec()),
        }
    }

    /// The plain value of stored `data`, and whether it is stale (written by
    /// another provider or key than the one that writes now), as
    /// prefixTransformers.TransformFromStorage.
    pub fn decrypt(&self, key: &str, data: &[u8]) -> Result<(Vec<u8>, bool), TransformError> {
        let mut errors = Vec::new();
        for (i, p) in self.0.iter().enumerate() {
            let Some(rest) = data.strip_prefix(p.kind.prefix().as_bytes()) else {
                continue;
            };
            match p.decrypt(key, rest) {
                Ok((plain, stale)) => return Ok((plain, stale || i != 0)),
                // Both an identity that saw encrypted data and a key that
                // failed leave the next provider with the same prefix a try.
                Err(e) => errors.push(e),
            }
        }
        Err(reduce(errors).unwrap_or(TransformError::NoMatchingPrefix))
    }

    /// "aescbc/<key>" or "identity" for the provider and key that wrote
    /// `data`, or None when no configured one did.
    pub fn written_by(&self, data: &[u8]) -> Option<String> {
        self.0.iter().find_map(|p| {
            p.key_of(data).map(|k| {
                if p.kind == ProviderKind::Identity {
                    "identity".to_string()
                } else {
                    format!("{}/{k}", p.kind.name())
                }
            })
        })
    }

    /// "aescbc/<key>" or "identity": what writes now.
    pub fn writer(&self) -> String {
        match self.0.first() {
            Some(p) if p.kind != ProviderKind::Identity => {
                format!("{}/{}", p.kind.name(), p.key_names().next().unwrap_or(""))
            }
            _ => "identity".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn aes(kind: ProviderKind, keys: &[(&str, &[u8])]) -> Provider {
        let keys: Vec<(String, Vec<u8>)> = keys
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_vec()))
            .collect();
        Provider::aes(kind, &keys).unwrap()
    }

    const K1: &[u8] = &[1u8; 32];
    const K2: &[u8] = &[2u8; 32];
    const KEY: &str = "/registry/secrets/default/s";

    #[test]
    fn aescbc_round_trips_with_kubernetes_prefix_and_padding() {
        let p = Providers(vec![aes(ProviderKind::AesCbc, &[("key1", K1)])]);
        for len in [0usize, 1, 15, 16, 17, 100] {
            let plain = vec![b'x'; len];
            let stored = p.encrypt(KEY, &plain).unwrap();
            assert!(stored.starts_with(b"k8s:enc:aescbc:v1:key1:"));
            let body = &stored[b"k8s:enc:aescbc:v1:key1:".len()..];
            // IV + whole blocks, always at least one byte of padding.
            assert_eq!(body.len(), 16 + (len / 16 + 1) * 16, "len {len}");
            if len > 3 {
                assert!(!stored.windows(len).any(|w| w == plain.as_slice()));
            }
            assert_eq!(p.decrypt(KEY, &stored).unwrap(), (plain, false));
        }
        // A random IV: the same value encrypts differently every time.
        assert_ne!(p.encrypt(KEY, b"v").unwrap(), p.encrypt(KEY, b"v").unwrap());
    }

    #[test]
    fn aescbc_reads_what_go_crypto_wrote() {
        // NIST SP 800-38A F.2.5 (CBC-AES256.Encrypt), first block.
        let key: Vec<u8> = (0..32)
            .map(|i| {
                u8::from_str_radix(
                    &"603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"
                        [i * 2..i * 2 + 2],
                    16,
                )
                .unwrap()
            })
            .collect();
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len() / 2)
                .map(|i| u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).unwrap())
                .collect()
        };
        let iv = hex("000102030405060708090a0b0c0d0e0f");
        let plain = hex("6bc1bee22e409f96e93d7e117393172a");
        let cipher = hex("f58c4c04d6e5f1ba779eabfb5f7bfbd6");
        let cbc = Cbc(AesKey::new(&key).unwrap());
        let enc = cbc.encrypt(&plain).unwrap();
        // Our own output decrypts; the vector's first block matches when the IV is the vector's.
        assert_eq!(cbc.decrypt(&enc).unwrap(), plain);
        let mut block = plain.clone();
        for (b, i) in block.iter_mut().zip(&iv) {
            *b ^= i;
        }
        cbc.0.encrypt(&mut block);
        assert_eq!(block, cipher);
    }

    #[test]
    fn aesgcm_round_trips_and_binds_the_store_key() {
        let p = Providers(vec![aes(ProviderKind::AesGcm, &[("g", K1)])]);
        let stored = p.encrypt(KEY, b"hello").unwrap();
        assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:g:"));
        assert_eq!(stored.len(), "k8s:enc:aesgcm:v1:g:".len() + 12 + 5 + 16);
        assert_eq!(p.decrypt(KEY, &stored).unwrap().0, b"hello");
        // Copied under another key, it does not decrypt.
        assert_eq!(
            p.decrypt("/registry/secrets/default/other", &stored),
            Err(TransformError::Authentication)
        );
    }

    #[test]
    fn rotation_old_key_decrypts_new_key_encrypts() {
        let old = Providers(vec![aes(ProviderKind::AesCbc, &[("k1", K1)])]);
        let stored_old = old.encrypt(KEY, b"v1").unwrap();
        let rotated = Providers(vec![aes(ProviderKind::AesCbc, &[("k2", K2), ("k1", K1)])]);
        assert_eq!(
            rotated.decrypt(KEY, &stored_old).unwrap(),
            (b"v1".to_vec(), true)
        );
        let stored_new = rotated.encrypt(KEY, b"v2").unwrap();
        assert!(stored_new.starts_with(b"k8s:enc:aescbc:v1:k2:"));
        assert_eq!(
            rotated.decrypt(KEY, &stored_new).unwrap(),
            (b"v2".to_vec(), false)
        );
        assert_eq!(
            rotated.written_by(&stored_old).as_deref(),
            Some("aescbc/k1")
        );
        assert_eq!(rotated.writer(), "aescbc/k2");
        // The old configuration does not know the new key.
        assert_eq!(
            old.decrypt(KEY, &stored_new),
            Err(TransformError::NoMatchingKey)
        );
    }

    #[test]
    fn a_wrong_key_is_an_error_not_garbage() {
        let right = Providers(vec![aes(ProviderKind::AesCbc, &[("k", K1)])]);
        let wrong = Providers(vec![aes(ProviderKind::AesCbc, &[("k", K2)])]);
        let stored = right.encrypt(KEY, b"{\"kind\":\"Secret\"}").unwrap();
        // CBC has no authentication: a wrong key shows as bad padding (or, with
        // 1/256 chance, as garbage that the caller's JSON decoding refuses).
        match wrong.decrypt(KEY, &stored) {
            Err(_) => {}
            Ok((v, _)) => assert_ne!(v, b"{\"kind\":\"Secret\"}"),
        }
        let g_right = Providers(vec![aes(ProviderKind::AesGcm, &[("k", K1)])]);
        let g_wrong = Providers(vec![aes(ProviderKind::AesGcm, &[("k", K2)])]);
        let stored = g_right.encrypt(KEY, b"x").unwrap();
        assert_eq!(
            g_wrong.decrypt(KEY, &stored),
            Err(TransformError::Authentication)
        );
        // Truncated and damaged values are errors, never a panic.
        for cut in 0..stored.len() {
            let _ = right.decrypt(KEY, &stored[..cut]);
            let _ = g_right.decrypt(KEY, &stored[..cut]);
        }
        assert_eq!(
            right.decrypt(KEY, b"k8s:enc:aescbc:v1:k:short"),
            Err(TransformError::TooShort)
        );
        assert_eq!(
            right.decrypt(KEY, b"k8s:enc:aescbc:v1:k:0123456789abcdef0"),
            Err(TransformError::InvalidBlockSize)
        );
    }

    #[test]
    fn identity_reads_plain_and_refuses_encrypted() {
        let cbc = aes(ProviderKind::AesCbc, &[("k", K1)]);
        let stored = Providers(vec![aes(ProviderKind::AesCbc, &[("k", K1)])])
            .encrypt(KEY, b"v")
            .unwrap();
        let only_identity = Providers(vec![Provider::identity()]);
        assert_eq!(
            only_identity.decrypt(KEY, b"{}").unwrap(),
            (b"{}".to_vec(), false)
        );
        assert_eq!(
            only_identity.decrypt(KEY, &stored),
            Err(TransformError::IdentityReadEncrypted)
        );
        // aescbc first, identity second (a cluster that turned encryption on):
        // old plain values read and are stale; new ones are encrypted.
        let p = Providers(vec![cbc, Provider::identity()]);
        assert_eq!(
            p.decrypt(KEY, b"{\"a\":1}").unwrap(),
            (b"{\"a\":1}".to_vec(), true)
        );
        assert_eq!(p.decrypt(KEY, &stored).unwrap(), (b"v".to_vec(), false));
        // identity first (turning encryption off): encrypted values still read, stale.
        let off = Providers(vec![
            Provider::identity(),
            aes(ProviderKind::AesCbc, &[("k", K1)]),
        ]);
        assert_eq!(off.decrypt(KEY, &stored).unwrap(), (b"v".to_vec(), true));
        assert_eq!(off.encrypt(KEY, b"plain").unwrap(), b"plain");
        // Nothing that matches: Kubernetes' message.
        let gcm_only = Providers(vec![aes(ProviderKind::AesGcm, &[("k", K1)])]);
        assert_eq!(
            gcm_only.decrypt(KEY, b"{}"),
            Err(TransformError::NoMatchingPrefix)
        );
        assert_eq!(
            gcm_only.decrypt(KEY, &stored).unwrap_err().to_string(),
            "no matching prefix found"
        );
    }

    #[test]
    fn key_sizes_are_checked() {
        let k = |n: usize| vec![(String::from("k"), vec![7u8; n])];
        for n in [16, 24, 32] {
            assert!(Provider::aes(ProviderKind::AesCbc, &k(n)).is_ok(), "{n}");
        }
        assert!(Provider::aes(ProviderKind::AesCbc, &k(31)).is_err());
        assert!(Provider::aes(ProviderKind::AesGcm, &k(24)).is_err());
        assert!(Provider::aes(ProviderKind::AesGcm, &k(32)).is_ok());
        assert!(Provider::aes(ProviderKind::AesCbc, &[]).is_err());
        assert!(Provider::aes(ProviderKind::AesCbc, &[(String::new(), vec![1; 32])]).is_err());
    }
}
