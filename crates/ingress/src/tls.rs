//! TLS: certificates from `kubernetes.io/tls` Secrets named in the
//! Ingresses' `spec.tls`, chosen by SNI (exact name, then a `*.` wildcard
//! one label deep), and a self-signed fallback for everything else (as
//! ingress-nginx's "Kubernetes Ingress Controller Fake Certificate").

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::routes::HostKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("secret has no {0}")]
    Missing(&'static str),
    #[error("reading PEM: {0}")]
    Pem(#[from] std::io::Error),
    #[error("no certificate in tls.crt")]
    NoCertificate,
    #[error("no private key in tls.key")]
    NoKey,
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error("generating the fallback certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and key from PEM (`tls.crt`, `tls.key`).
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut &cert_pem[..]).collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut &key_pem[..])?.ok_or(TlsError::NoKey)?;
    Ok(Arc::new(CertifiedKey::from_der(certs, key, &provider())?))
}

/// The certificate of a `kubernetes.io/tls` Secret.
pub fn secret_key(secret: &Secret) -> Result<Arc<CertifiedKey>, TlsError> {
    let data = secret.data.as_ref();
    let crt = data
        .and_then(|d| d.get("tls.crt"))
        .ok_or(TlsError::Missing("tls.crt"))?;
    let key = data
        .and_then(|d| d.get("tls.key"))
        .ok_or(TlsError::Missing("tls.key"))?;
    certified_key(&crt.0, &key.0)
}

/// A self-signed certificate for names nobody has a Secret for.
pub fn self_signed() -> Result<Arc<CertifiedKey>, TlsError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_string()])?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "skiff Ingress Controller Fake Certificate",
    );
    let cert = params.self_signed(&key)?;
    certified_key(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
}

/// Certificates by the names they serve.
#[derive(Debug, Default)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertTable {
    /// Adds `cert` for `host` (`foo.com` or `*.foo.com`) unless the name
    /// has one (the oldest Ingress wins).
    pub fn insert(&mut self, host: &str, cert: Arc<CertifiedKey>) {
        match HostKey::parse(Some(host)) {
            HostKey::Exact(h) => {
                self.exact.entry(h).or_insert(cert);
            }
            HostKey::Wildcard(h) => {
                self.wildcard.entry(h).or_insert(cert);
            }
            HostKey::Any => {}
        }
    }

    /// The certificate for an SNI name.
    pub fn lookup(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return Some(c);
        }
        let (first, rest) = name.split_once('.')?;
        if first.is_empty() {
            return None;
        }
        self.wildcard.get(rest)
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// rustls's certificate choice: the current [`CertTable`] by SNI, else
/// the fallback. The table is swapped as a whole on reload.
#[derive(Debug)]
pub struct CertResolver {
    table: RwLock<Arc<CertTable>>,
    fallback: Arc<CertifiedKey>,
}

impl CertResolver {
    pub fn new(fallback: Arc<CertifiedKey>) -> CertResolver {
        CertResolver {
            table: RwLock::new(Arc::new(CertTable::default())),
            fallback,
        }
    }

    pub fn store(&self, table: Arc<CertTable>) {
        match self.table.write() {
            Ok(mut t) => *t = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }

    /// The certificate for an SNI name (None: no SNI).
    pub fn choose(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let table = match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        sni.and_then(|n| table.lookup(n).cloned())
            .unwrap_or_else(|| self.fallback.clone())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(hello.server_name()))
    }
}

/// The HTTPS listener's configuration: certificates from `resolver`, ALPN
/// h2 and http/1.1.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::ByteString;

    fn cert_for(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn secret(crt: &str, key: &str) -> Secret {
        let mut data = std::collections::BTreeMap::new();
        data.insert("tls.crt".to_string(), ByteString(crt.as_bytes().to_vec()));
        data.insert("tls.key".to_string(), ByteString(key.as_bytes().to_vec()));
        Secret {
            data: Some(data),
            type_: Some("kubernetes.io/tls".into()),
            ..Default::default()
        }
    }

    #[test]
    fn parses_secrets_and_rejects_bad_ones() {
        let (crt, key) = cert_for(&["a.com"]);
        assert!(secret_key(&secret(&crt, &key)).is_ok());
        let (_, other_key) = cert_for(&["b.com"]);
        assert!(
            secret_key(&secret(&crt, &other_key)).is_err(),
            "mismatched key"
        );
        assert!(matches!(
            secret_key(&secret("", &key)),
            Err(TlsError::NoCertificate)
        ));
        assert!(matches!(
            secret_key(&secret(&crt, "")),
            Err(TlsError::NoKey)
        ));
        assert!(matches!(
            secret_key(&Secret::default()),
            Err(TlsError::Missing("tls.crt"))
        ));
    }

    #[test]
    fn chooses_by_sni_with_wildcards_and_fallback() {
        let a = secret_key(&{
            let (c, k) = cert_for(&["a.com"]);
            secret(&c, &k)
        })
        .unwrap();
        let wild = secret_key(&{
            let (c, k) = cert_for(&["*.b.com"]);
            secret(&c, &k)
        })
        .unwrap();
        let fallback = self_signed().unwrap();
        let mut table = CertTable::default();
        table.insert("a.com", a.clone());
        table.insert("*.b.com", wild.clone());
        table.insert("a.com", wild.clone()); // the first one stays
        let resolver = CertResolver::new(fallback.clone());
        assert!(
            Arc::ptr_eq(&resolver.choose(Some("a.com")), &fallback),
            "empty table before the first store"
        );
        resolver.store(Arc::new(table));
        assert!(Arc::ptr_eq(&resolver.choose(Some("a.com")), &a));
        assert!(Arc::ptr_eq(&resolver.choose(Some("A.COM")), &a));
        assert!(Arc::ptr_eq(&resolver.choose(Some("x.b.com")), &wild));
        assert!(Arc::ptr_eq(&resolver.choose(Some("y.x.b.com")), &fallback));
        assert!(Arc::ptr_eq(&resolver.choose(Some("b.com")), &fallback));
        assert!(Arc::ptr_eq(&resolver.choose(Some("c.com")), &fallback));
        assert!(Arc::ptr_eq(&resolver.choose(None), &fallback));
    }
}
