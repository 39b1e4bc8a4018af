//! Service account tokens (↔ pkg/serviceaccount): the TokenRequest API
//! issues ES256-signed JWTs bound to a service account (and optionally a
//! pod or secret), and the authenticator accepts them back. The signing key
//! is generated into the data directory on first start.

use std::path::Path;

use base64::Engine;
use serde_json::{Value, json};
use skiff_api::jwt::{B64, EsKey, LEGACY_ISSUER};

use crate::tls::{TlsError, write_private};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The audiences the API server accepts tokens for (`--api-audiences`
/// defaults to the issuer).
pub const API_AUDIENCE: &str = ISSUER;
/// The longest lifetime a TokenRequest gets (kube-apiserver's
/// `--service-account-max-token-expiration`; skiff sets it to a year, the
/// kubelet's own extended lifetime for projected tokens).
pub const MAX_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;
pub struct TokenSigner {
    key: EsKey,
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountUser {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub user: ServiceAccountUser,
    pub audiences: Vec<String>,
    /// ("Pod" | "Secret", name, uid) the token is bound to.
    pub bound: Option<(String, String, String)>,
    /// A legacy token's Secret (issuer `kubernetes/serviceaccount`): the
    /// token is valid while that Secret holds it.
    pub legacy_secret: Option<String>,
}

impl ServiceAccountUser {
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

impl TokenSigner {
    /// Load `<data-dir>/tls/service-account.key` (PKCS#8), creating it on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<TokenSigner, TlsError> {
        let path = data_dir.join("tls").join("service-account.key");
        let der = match std::fs::read(&path) {
            Ok(d) if !d.is_empty() => d,
            _ => {
                let kp = rcgen::KeyPair::generate()?;
                let der = kp.serialize_der();
                write_private(&path, &der)?;
                der
            }
        };
        let key = EsKey::from_pkcs8(&der).map_err(|e| TlsError::Io {
            path: path.clone(),
            source: std::io::Error::other(format!("bad service account key: {e}")),
        })?;
        Ok(TokenSigner { key })
    }

    /// Sign a token for `user`, valid from `now` for `expiration_seconds`.
    pub fn issue(
        &self,
        user: &ServiceAccountUser,
        audiences: &[String],
        now: i64,
        expiration_seconds: i64,
        bound: Option<(&str, &str, &str)>,
    ) -> Option<String> {
        let mut k8s = json!({"namespace": user.namespace, "serviceaccount": {"name": user.name, "uid": user.uid}});
        if let Some((kind, name, uid)) = bound {
            let field = if kind == "Pod" { "pod" } else { "secret" };
            k8s[field] = json!({"name": name, "uid": uid});
        }
        let aud: Vec<String> = if audiences.is_empty() {
            vec![ISSUER.to_string()]
        } else {
            audiences.to_vec()
        };
        let claims = json!({
            "aud": aud,
            "exp": now.saturating_add(expiration_seconds),
            "iat": now,
            "nbf": now,
            "iss": ISSUER,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": k8s,
            "sub": user.username(),
        });
        self.key.sign(&claims)
    }

    /// The service account issuer's OpenID discovery document
    /// (`/.well-known/openid-configuration`), pointing to `jwks_uri`.
    pub fn openid_configuration(&self, jwks_uri: &str) -> Value {
        json!({
            "issuer": ISSUER,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// The public keys tokens are signed with, as a JSON Web Key Set
    /// (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        // An uncompressed P-256 point: 0x04 || X (32 bytes) || Y (32 bytes).
        let point = self.key.public_point();
        let (x, y) = match point {
            [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
            _ => return json!({"keys": []}),
        };
        json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": self.key.key_id(), "crv": "P-256", "alg": "ES256",
            "x": B64.encode(x), "y": B64.encode(y),
        }]})
    }

    /// Verify a token's signature, issuer and lifetime.
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        let claims = self.key.verify(token)?;
        match claims.get("iss").and_then(Value::as_str) {
            Some(ISSUER) => {}
            Some(LEGACY_ISSUER) => return legacy(&claims),
            _ => return None,
        }
        let exp = claims.get("exp").and_then(Value::as_i64)?;
        let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
        if now >= exp || now.saturating_add(60) < nbf {
            return None;
        }
        let k8s = claims.get("kubernetes.io")?;
        let audiences = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        let bound = [("pod", "Pod"), ("secret", "Secret")]
            .into_iter()
            .find_map(|(field, kind)| {
                let b = k8s.get(field)?;
                Some((kind.to_string(), text(b.get("name")), text(b.get("uid"))))
            });
        Some(Claims {
            user: ServiceAccountUser {
                namespace: k8s.get("namespace")?.as_str()?.to_string(),
                name: k8s.pointer("/serviceaccount/name")?.as_str()?.to_string(),
                uid: text(k8s.pointer("/serviceaccount/uid")),
            },
            audiences,
            bound,
            legacy_secret: None,
        })
    }
}

/// A legacy token's claims (serviceaccount.legacyValidator): no expiry, no
/// audience (the API server's own, implicitly).
fn legacy(claims: &Value) -> Option<Claims> {
    let text = |k: &str| {
        claims
            .get(format!("kubernetes.io/serviceaccount/{k}"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (namespace, name, secret) = (
        text("namespace")?,
        text("service-account.name")?,
        text("secret.name")?,
    );
    if namespace.is_empty() || name.is_empty() || secret.is_empty() {
        return None;
    }
    Some(Claims {
        user: ServiceAccountUser {
            namespace,
            name,
            uid: text("service-account.uid").unwrap_or_default(),
        },
        audiences: vec![API_AUDIENCE.to_string()],
        bound: None,
        legacy_secret: Some(secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tls")).unwrap();
        let signer = TokenSigner::load_or_create(dir.path()).unwrap();
        let user = ServiceAccountUser {
            namespace: "default".into(),
            name: "default".into(),
            uid: "u1".into(),
        };
        let token = signer.issue(&user, &[], 1000, 3600, None).unwrap();
        assert_eq!(
            signer.verify(&token, 1001).map(|c| c.user),
            Some(user.clone())
        );
        assert_eq!(
            signer.verify(&token, 1001).unwrap().audiences,
            vec![ISSUER.to_string()]
        );
        let bound = signer
            .issue(
                &user,
                &["vault".into()],
                1000,
                3600,
                Some(("Pod", "p", "pu")),
            )
            .unwrap();
        let claims = signer.verify(&bound, 1001).unwrap();
        assert_eq!(claims.audiences, vec!["vault".to_string()]);
        assert_eq!(claims.bound, Some(("Pod".into(), "p".into(), "pu".into())));
        assert_eq!(signer.verify(&token, 4600), None, "expired");
        let mut forged = token.clone();
        forged.replace_range(forged.len() - 4.., "AAAA");
        assert_eq!(signer.verify(&forged, 1001), None);
        // The published key verifies the token (what an OIDC client does).
        let jwk = &signer.jwks()["keys"][0];
        assert_eq!(jwk["kid"], signer.key.key_id());
        let mut point = vec![4u8];
        for c in ["x", "y"] {
            point.extend(B64.decode(jwk[c].as_str().unwrap()).unwrap());
        }
        let (input, sig) = token.rsplit_once('.').unwrap();
        use ring::signature;
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
            .verify(input.as_bytes(), &B64.decode(sig).unwrap())
            .unwrap();
        let conf = signer.openid_configuration("https://10.0.0.1:6443/openid/v1/jwks");
        assert_eq!(conf["issuer"], ISSUER);
        // The same key after a restart.
        let again = TokenSigner::load_or_create(dir.path()).unwrap();
        assert_eq!(
            again.verify(&token, 1001).map(|c| c.user),
            Some(user.clone())
        );
        // A legacy token (a token Secret's): no expiry, the API audience.
        let der = std::fs::read(dir.path().join("tls/service-account.key")).unwrap();
        let legacy = EsKey::from_pkcs8(&der)
            .unwrap()
            .sign(&skiff_api::jwt::legacy_claims(
                "default", "default", "u1", "t1",
            ))
            .unwrap();
        let claims = signer.verify(&legacy, i64::MAX).unwrap();
        assert_eq!(claims.user, user);
        assert_eq!(claims.legacy_secret.as_deref(), Some("t1"));
        assert_eq!(claims.audiences, vec![API_AUDIENCE.to_string()]);
    }
}
