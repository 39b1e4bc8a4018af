//! The kubelet API's serving certificate (↔ the kubelet's server
//! certificate manager with `serverTLSBootstrap`): the kubelet asks for it
//! through a `kubernetes.io/kubelet-serving` CertificateSigningRequest as
//! `system:node:NAME`, for its node name and address, and the API server
//! verifies it against the cluster CA on every call. Until the first one
//! is issued the kubelet serves a self-signed certificate (which the API
//! server refuses). The issued one is kept in
//! `<data-dir>/serving-kubelet.{crt,key}` (k3s's names, mode 0600) and
//! renewed while the kubelet runs, once 70–90% of its lifetime has passed
//! (client-go's jittered rotation deadline); connections already open
//! keep the certificate they started with.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::server::ServerError;

pub const SIGNER: &str = "kubernetes.io/kubelet-serving";
const USAGES: &[&str] = &["digital signature", "key encipherment", "server auth"];
/// How long one request may wait for approval and signing.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The wait before asking again after a failure (doubling to the cap).
const RETRY_INITIAL: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// The names a serving certificate is for.
#[derive(Clone, Debug)]
pub struct Names {
    pub node_name: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// The certificate a TLS handshake presents: swapped in place on renewal.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
    /// notBefore and notAfter (Unix seconds) of an issued certificate.
    validity: RwLock<Option<(i64, i64)>>,
    issued: tokio::sync::watch::Sender<bool>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn certified(
    provider: &rustls::crypto::CryptoProvider,
    cert_pem: &str,
    key_pem: &str,
) -> Result<CertifiedKey, ServerError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| rustls::Error::General(format!("serving certificate: {e}")))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| rustls::Error::General(format!("serving key: {e}")))?
        .ok_or_else(|| rustls::Error::General("serving key: no private key".into()))?;
    Ok(CertifiedKey::from_der(certs, key, provider)?)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// notBefore and notAfter of a PEM certificate that names every one of `names`.
fn covers(cert_pem: &str, names: &Names) -> Option<(i64, i64)> {
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()?
        .ok()?;
    let subject = skiff_api::x509::certificate_subject(&der)?;
    let all = names.dns.iter().all(|d| subject.dns_names.contains(d))
        && names.ips.iter().all(|ip| subject.ip_addresses.contains(ip))
        && subject.common_name == format!("system:node:{}", names.node_name);
    all.then_some((subject.not_before, subject.not_after))
}

/// When to renew a certificate valid from `not_before` to `not_after`:
/// at a point 70–90% through its lifetime (`jitter` in per mille of the
/// 20% span, 0..=1000).
pub fn rotation_deadline(not_before: i64, not_after: i64, jitter: i64) -> i64 {
    let total = not_after.saturating_sub(not_before).max(0);
    let permille = 700 + jitter.clamp(0, 1000) / 5;
    not_before.saturating_add(total / 1000 * permille + total % 1000 * permille / 1000)
}

fn jitter() -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    i64::from(nanos % 1000)
}

impl ServingCert {
    /// A self-signed certificate for `names` until one is issued, or the
    /// issued one in `dir` while it covers them and has not expired.
    pub fn new(names: &Names, dir: &Path) -> Result<Arc<Self>, ServerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (issued, _) = tokio::sync::watch::channel(false);
        let (cert, validity) = match Self::from_disk(&provider, names, dir) {
            Some((c, v)) => (c, Some(v)),
            None => (Self::self_signed(&provider, names)?, None),
        };
        issued.send_replace(validity.is_some());
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(cert)),
            validity: RwLock::new(validity),
            issued,
            provider,
        }))
    }

    fn self_signed(
        provider: &rustls::crypto::CryptoProvider,
        names: &Names,
    ) -> Result<CertifiedKey, ServerError> {
        let key = rcgen::KeyPair::generate()?;
        let mut all = names.dns.clone();
        all.extend(names.ips.iter().map(IpAddr::to_string));
        let mut params = rcgen::CertificateParams::new(all)?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("{}@kubelet", names.node_name),
        );
        let cert = params.self_signed(&key)?;
        certified(provider, &cert.pem(), &key.serialize_pem())
    }

    fn from_disk(
        provider: &rustls::crypto::CryptoProvider,
        names: &Names,
        dir: &Path,
    ) -> Option<(CertifiedKey, (i64, i64))> {
        let (cert_path, key_path) = paths(dir);
        let cert = std::fs::read_to_string(cert_path).ok()?;
        let key = std::fs::read_to_string(key_path).ok()?;
        let validity = covers(&cert, names).filter(|(_, after)| *after > unix_now())?;
        let certified = certified(provider, &cert, &key).ok()?;
        Some((certified, validity))
    }

    fn install(
        &self,
        cert_pem: &str,
        key_pem: &str,
        validity: (i64, i64),
    ) -> Result<(), ServerError> {
        let c = certified(&self.provider, cert_pem, key_pem)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(c);
        }
        if let Ok(mut v) = self.validity.write() {
            *v = Some(validity);
        }
        self.issued.send_replace(true);
        Ok(())
    }

    /// Whether a certificate from the cluster CA is being served.
    pub fn is_issued(&self) -> bool {
        *self.issued.borrow()
    }

    /// Wait at most `timeout` for a certificate from the cluster CA.
    pub async fn wait_issued(&self, timeout: Duration) -> bool {
        let mut rx = self.issued.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|issued| *issued))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn renew_at(&self) -> Option<i64> {
        let (before, after) = (*self.validity.read().ok()?)?;
        Some(rotation_deadline(before, after, jitter()))
    }
}

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (
        dir.join("serving-kubelet.crt"),
        dir.join("serving-kubelet.key"),
    )
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Ask for a certificate once; install and keep it.
async fn renew(
    client: &kube::Client,
    names: &Names,
    dir: &Path,
    cert: &ServingCert,
) -> Result<(), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut all = names.dns.clone();
    all.extend(names.ips.iter().map(IpAddr::to_string));
    let mut params = rcgen::CertificateParams::new(all).map_err(|e| e.to_string())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("system:node:{}", names.node_name),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| e.to_string())?;
    let pem = skiff_runtime::certificates::request_certificate(
        client,
        &skiff_runtime::certificates::Request {
            generate_name: "csr-",
            signer: SIGNER,
            usages: USAGES,
            request_pem: &request,
        },
        REQUEST_TIMEOUT,
    )
    .await
    .map_err(|e| e.to_string())?;
    let validity = covers(&pem, names)
        .ok_or_else(|| "the issued certificate does not name this node's names".to_string())?;
    let key_pem = key.serialize_pem();
    cert.install(&pem, &key_pem, validity)
        .map_err(|e| e.to_string())?;
    let (cert_path, key_path) = paths(dir);
    if let Err(e) = std::fs::create_dir_all(dir)
        .and_then(|()| write_private(&key_path, key_pem.as_bytes()))
        .and_then(|()| write_private(&cert_path, pem.as_bytes()))
    {
        tracing::warn!(error = %e, "keeping the serving certificate on disk failed");
    }
    tracing::info!(node = %names.node_name, not_after = validity.1, "serving certificate issued");
    Ok(())
}

/// Keep the serving certificate issued and current, until dropped.
pub async fn maintain(client: kube::Client, names: Names, dir: PathBuf, cert: Arc<ServingCert>) {
    let mut retry = RETRY_INITIAL;
    loop {
        if let Some(at) = cert.renew_at() {
            let wait = u64::try_from(at.saturating_sub(unix_now())).unwrap_or(0);
            if wait > 0 {
                tracing::debug!(seconds = wait, "next serving certificate renewal");
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
        }
        match renew(&client, &names, &dir, &cert).await {
            Ok(()) => retry = RETRY_INITIAL,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "the serving certificate could not be renewed");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// A self-signed serving certificate for tests of TLS servers.
#[cfg(test)]
pub(crate) fn self_signed_for_tests(node_name: &str, ip: &str) -> Arc<ServingCert> {
    let names = Names {
        node_name: node_name.into(),
        dns: vec![node_name.into()],
        ips: ip.parse().into_iter().collect(),
    };
    let dir = std::env::temp_dir().join("skiff-serving-none");
    ServingCert::new(&names, &dir).expect("a self-signed certificate")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            node_name: "n1".into(),
            dns: vec!["n1".into()],
            ips: vec!["10.0.0.5".parse().unwrap()],
        }
    }

    #[test]
    fn renewal_falls_between_seventy_and_ninety_percent() {
        assert_eq!(rotation_deadline(1000, 2000, 0), 1700);
        assert_eq!(rotation_deadline(1000, 2000, 500), 1800);
        assert_eq!(rotation_deadline(1000, 2000, 1000), 1900);
        let year = 365 * 86_400;
        assert_eq!(rotation_deadline(0, year, 500), year / 10 * 8);
        assert_eq!(
            rotation_deadline(1000, 500, 500),
            1000,
            "a nonsense validity renews at once"
        );
    }

    #[test]
    fn serves_self_signed_until_one_is_issued_then_the_issued_one() {
        let dir = std::env::temp_dir().join(format!("skiff-serving-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cert = ServingCert::new(&names(), &dir).unwrap();
        assert!(!cert.is_issued());
        // A CA-issued certificate for the names, installed and kept.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.pem(), ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["n1".into(), "10.0.0.5".into()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let pem = p.signed_by(&key, &issuer).unwrap().pem();
        let validity = covers(&pem, &names()).expect("names the node");
        cert.install(&pem, &key.serialize_pem(), validity).unwrap();
        assert!(cert.is_issued());
        std::fs::create_dir_all(&dir).unwrap();
        let (c, k) = paths(&dir);
        write_private(&c, pem.as_bytes()).unwrap();
        write_private(&k, key.serialize_pem().as_bytes()).unwrap();
        // A restart takes it from disk; other names do not.
        assert!(ServingCert::new(&names(), &dir).unwrap().is_issued());
        let mut other = names();
        other.ips = vec!["10.0.0.6".parse().unwrap()];
        assert!(!ServingCert::new(&other, &dir).unwrap().is_issued());
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
