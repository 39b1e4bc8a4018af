//! ES256 JSON Web Tokens with the service-account key: one signer for the
//! API server (TokenRequest, the authenticator, the issuer's JWKS) and the
//! controller manager (legacy service-account token Secrets, as
//! kube-controller-manager's `--service-account-private-key-file`).

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A P-256 key that signs and verifies ES256 tokens.
pub struct EsKey {
    key: EcdsaKeyPair,
    key_id: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for EsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsKey")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl EsKey {
    /// A PKCS#8 (DER) P-256 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<EsKey, String> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| format!("not a PKCS#8 P-256 key: {e}"))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let key_id = B64.encode(&digest.as_ref()[..16]);
        Ok(EsKey { key, key_id, rng })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The uncompressed public point (0x04 || X || Y).
    pub fn public_point(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// A signed token carrying `claims`.
    pub fn sign(&self, claims: &Value) -> Option<String> {
        let header = json!({"alg": "ES256", "kid": self.key_id, "typ": "JWT"});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self.key.sign(&self.rng, signing_input.as_bytes()).ok()?;
        Some(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }

    /// The claims of a token whose signature this key verifies.
    pub fn verify(&self, token: &str) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let sig = B64.decode(s).ok()?;
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.public_point(),
        );
        public.verify(format!("{h}.{c}").as_bytes(), &sig).ok()?;
        serde_json::from_slice(&B64.decode(c).ok()?).ok()
    }
}

/// The issuer of legacy service-account tokens (token Secrets).
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// The claims of a legacy token for service account `namespace/name`
/// (uid `uid`) kept in Secret `secret` (serviceaccount.LegacyClaims): no
/// audience and no expiry; it lives as long as the Secret.
pub fn legacy_claims(namespace: &str, name: &str, uid: &str, secret: &str) -> Value {
    json!({
        "iss": LEGACY_ISSUER,
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/secret.name": secret,
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": uid,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("key");
        let key = EsKey::from_pkcs8(der.as_ref()).expect("parses");
        let claims = legacy_claims("ns", "sa", "u1", "sa-token");
        let token = key.sign(&claims).expect("signs");
        assert_eq!(key.verify(&token), Some(claims));
        // Another key's signature, or a changed payload, does not verify.
        let other = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("key");
        assert_eq!(
            EsKey::from_pkcs8(other.as_ref())
                .expect("parses")
                .verify(&token),
            None
        );
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(legacy_claims("ns", "admin", "u1", "x").to_string());
        parts[1] = &forged;
        assert_eq!(key.verify(&parts.join(".")), None);
    }
}
