//! The cluster's PKI and credentials: a CA and a serving certificate
//! generated into the data directory on first start (as k3s does), client
//! certificates for the admin and each control-plane component (CN the
//! user, O the group, as Kubernetes reads them), the admin and node-join
//! tokens, and kubeconfigs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}: no certificate or key found")]
    Empty(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write a file readable only by its owner, atomically (temp file + rename).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(contents).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// The credentials of a cluster, as kept in `<data-dir>/tls` and `<data-dir>/token`.
pub struct Pki {
    pub ca_pem: String,
    ca_key_pem: String,
    dir: PathBuf,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// Bearer token of the cluster admin (the kubeconfig's).
    pub admin_token: String,
    /// Token agents join with (printed by the server, as k3s's node-token).
    pub node_token: String,
    /// A token that joins agents only (`<data-dir>/agent-token`).
    pub agent_token: Option<String>,
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> Result<String, TlsError>,
) -> Result<String, TlsError> {
    match fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => {
            let s = make()?.trim().to_string();
            write_private(path, s.as_bytes())?;
            Ok(s)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let s = make()?.trim().to_string();
            write_private(path, s.as_bytes())?;
            Ok(s)
        }
        Err(e) => Err(TlsError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// The CA's parameters: fixed, so that the issuer of a serving certificate
/// signed later matches the CA certificate made on first start.
fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "skiff-server-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl Pki {
    /// Load the PKI from `data_dir`, generating what is missing. The serving
    /// certificate is regenerated when `sans` asks for names it lacks.
    pub fn load_or_create(data_dir: &Path, sans: &[String]) -> Result<Pki, TlsError> {
        let dir = data_dir.join("tls");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let ca_key_path = dir.join("server-ca.key");
        let ca_path = dir.join("server-ca.crt");
        let ca_key_pem = read_or_create(&ca_key_path, || Ok(KeyPair::generate()?.serialize_pem()))?;
        let ca_key = KeyPair::from_pem(&ca_key_pem)?;
        let ca_params = ca_params()?;
        // A new CA lives ten years (kubeadm's and k3s's); its identity as an
        // issuer is its name and key, not its validity.
        let ca_pem = read_or_create(&ca_path, || {
            let mut params = ca_params.clone();
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::hours(1);
            params.not_after = now + time::Duration::days(CA_DAYS);
            Ok(params.self_signed(&ca_key)?.pem())
        })?;

        let sans_path = dir.join("serving.sans");
        let mut all_sans: Vec<String> = vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
        ];
        if let Ok(h) = fs::read_to_string("/etc/hostname") {
            let h = h.trim();
            if !h.is_empty() {
                all_sans.push(h.to_string());
            }
        }
        for s in sans {
            if !all_sans.contains(s) {
                all_sans.push(s.clone());
            }
        }
        let wanted = all_sans.join("\n");
        let cert_path = dir.join("serving.crt");
        let key_path = dir.join("serving.key");
        let current = fs::read_to_string(&sans_path).unwrap_or_default();
        let have_all = all_sans.iter().all(|s| current.lines().any(|l| l == s));
        // The serving certificate lives a year and is re-issued at start
        // within 120 days of its expiry (k3s), or when a name is missing.
        let expiring = fs::read_to_string(&cert_path)
            .ok()
            .and_then(|pem| pem_der(&pem))
            .and_then(|der| skiff_api::x509::certificate_subject(&der))
            .is_none_or(|s| {
                s.not_after - jiff::Timestamp::now().as_second() < RENEW_WITHIN_DAYS * 86_400
            });
        if !have_all || expiring || !cert_path.exists() || !key_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(DnType::CommonName, "skiff-apiserver");
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::minutes(5);
            params.not_after = now + time::Duration::days(CLIENT_CERT_DAYS);
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            params.subject_alt_names = all_sans
                .iter()
                .map(|s| match s.parse::<std::net::IpAddr>() {
                    Ok(ip) => Ok(SanType::IpAddress(ip)),
                    Err(_) => Ok(SanType::DnsName(s.clone().try_into()?)),
                })
                .collect::<Result<_, rcgen::Error>>()?;
            // The issuer is named from the CA's (fixed) parameters and key.
            let issuer = Issuer::from_params(&ca_params, &ca_key);
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            write_private(&cert_path, cert.pem().as_bytes())?;
            write_private(&sans_path, wanted.as_bytes())?;
        }
        let serving_cert_pem = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let serving_key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let admin_token = read_or_create(&data_dir.join("admin.token"), || Ok(random_token()))?;
        // k3s's secure token, K10<sha256 of the CA>::server:<secret>: an
        // agent checks the CA it is served against the hash before it sends
        // anything. A bare token from an older cluster keeps working.
        // A token given as a bare secret (`--token`) is kept in this form too.
        let node_token_path = data_dir.join("node-token");
        let node_token = read_or_create(&node_token_path, || {
            Ok(join_token(&ca_pem, &random_token()))
        })?;
        let node_token = secure_token_file(&node_token_path, &ca_pem, node_token, "server")?;
        // The agent token (`--agent-token`, as k3s's): it joins agents but
        // is not the key of the cluster's bootstrap data.
        let agent_token_path = data_dir.join("agent-token");
        let agent_token = match fs::read_to_string(&agent_token_path) {
            Ok(t) if !t.trim().is_empty() => Some(secure_token_file(
                &agent_token_path,
                &ca_pem,
                t.trim().to_string(),
                "node",
            )?),
            _ => None,
        };
        Ok(Pki {
            ca_pem,
            ca_key_pem,
            dir,
            serving_cert_pem,
            serving_key_pem,
            admin_token,
            node_token,
            agent_token,
        })
    }

    /// The rustls server configuration (HTTP/2 and HTTP/1.1 by ALPN).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs: Vec<_> = rustls_pemfile::certs(&mut self.serving_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Io {
                path: "serving.crt".into(),
                source: e,
            })?;
        let key = rustls_pemfile::private_key(&mut self.serving_key_pem.as_bytes())
            .map_err(|e| TlsError::Io {
                path: "serving.key".into(),
                source: e,
            })?
            .ok_or_else(|| TlsError::Empty("serving.key".into()))?;
        if certs.is_empty() {
            return Err(TlsError::Empty("serving.crt".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Client certificates signed by the cluster CA authenticate their
        // CN and O; a client without one goes on to bearer tokens.
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pemfile::certs(&mut self.ca_pem.as_bytes()) {
            let ca = ca.map_err(|e| TlsError::Io {
                path: "server-ca.crt".into(),
                source: e,
            })?;
            roots.add(ca)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A kubeconfig for `server` (e.g. https://127.0.0.1:6443) with the
    /// token as its credential.
    pub fn token_kubeconfig(&self, server: &str, user: &str, token: &str) -> String {
        self.kubeconfig_with(server, user, &format!("    token: {token}\n"))
    }

    fn kubeconfig_with(&self, server: &str, user: &str, credential: &str) -> String {
        let ca = b64(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: skiff\ncontexts:\n- context:\n    cluster: skiff\n    user: {user}\n  name: skiff\ncurrent-context: skiff\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n{credential}"
        )
    }

    /// A client certificate and key (PEM) for `user` in `group`, signed by
    /// the cluster CA, valid for a year from now.
    pub fn issue_client(
        &self,
        user: &str,
        group: Option<&str>,
    ) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(group) = group {
            params
                .distinguished_name
                .push(DnType::OrganizationName, group);
        }
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(CLIENT_CERT_DAYS);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        let ca_params = ca_params()?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The client certificate of component `name` (`tls/client-NAME.crt`
    /// and `.key`, k3s's layout) for `user` in `group`: the one on disk
    /// while it names the same subject and is more than 120 days from
    /// expiry, else a new one (k3s renews at start within 120 days).
    pub fn client_cert(
        &self,
        name: &str,
        user: &str,
        group: Option<&str>,
    ) -> Result<(String, String), TlsError> {
        let cert_path = self.dir.join(format!("client-{name}.crt"));
        let key_path = self.dir.join(format!("client-{name}.key"));
        if let (Ok(cert), Ok(key)) = (
            fs::read_to_string(&cert_path),
            fs::read_to_string(&key_path),
        ) {
            let now = jiff::Timestamp::now().as_second();
            let fresh = pem_der(&cert)
                .and_then(|der| cert_subject(&der))
                .is_some_and(|s| {
                    s.common_name == user
                        && s.organizations.iter().map(String::as_str).eq(group)
                        && s.not_after - now > RENEW_WITHIN_DAYS * 86_400
                });
            if fresh {
                return Ok((cert, key));
            }
        }
        let (cert, key) = self.issue_client(user, group)?;
        write_private(&key_path, key.as_bytes())?;
        write_private(&cert_path, cert.as_bytes())?;
        Ok((cert, key))
    }

    /// A kubeconfig for `server` with a client certificate and key (PEM)
    /// as the credential of `user`.
    pub fn kubeconfig_with_cert(&self, server: &str, user: &str, cert: &str, key: &str) -> String {
        self.kubeconfig_with(
            server,
            user,
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(cert),
                b64(key)
            ),
        )
    }

    /// A kubeconfig for `server` whose credential is the client
    /// certificate `name` (see [`Pki::client_cert`]).
    pub fn cert_kubeconfig(
        &self,
        server: &str,
        name: &str,
        user: &str,
        group: Option<&str>,
    ) -> Result<String, TlsError> {
        let (cert, key) = self.client_cert(name, user, group)?;
        Ok(self.kubeconfig_with_cert(server, name, &cert, &key))
    }
}

/// The SHA-256 of the CA as `/cacerts` serves it, in hex.
pub fn ca_hash(ca_pem: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A join token pinning `ca_pem`: `K10<sha256>::server:<secret>`.
pub fn join_token(ca_pem: &str, secret: &str) -> String {
    format!("K10{}::server:{secret}", ca_hash(ca_pem))
}

/// The secret of a join token: what follows `K10<hash>::<user>:` in a
/// secure token, the whole of a bare one.
pub fn join_token_secret(token: &str) -> &str {
    token
        .strip_prefix("K10")
        .and_then(|rest| rest.split_once("::"))
        .and_then(|(_, rest)| rest.split_once(':'))
        .map_or(token, |(_, secret)| secret)
}

/// A join token in k3s's secure form for `ca_pem`, as the token files
/// keep it: `K10<sha256 of the CA>::<user>:<secret>` (`server` for the
/// cluster token, `node` for the agent token). A bare secret gets the
/// CA's hash; a secure token for another CA is re-pinned to this one.
pub fn secure_join_token(ca_pem: &str, token: &str, user: &str) -> String {
    let secret = join_token_secret(token);
    format!("K10{}::{user}:{secret}", ca_hash(ca_pem))
}

/// The token in `path`, rewritten in its secure form when it is not.
fn secure_token_file(
    path: &Path,
    ca_pem: &str,
    token: String,
    user: &str,
) -> Result<String, TlsError> {
    let secure = secure_join_token(ca_pem, &token, user);
    if secure != token {
        write_private(path, secure.as_bytes())?;
    }
    Ok(secure)
}

/// The cluster CA lives ten years.
pub const CA_DAYS: i64 = 3650;

/// Client certificates live a year and are renewed at start within 120
/// days of expiry, as k3s's.
pub const CLIENT_CERT_DAYS: i64 = 365;
pub const RENEW_WITHIN_DAYS: i64 = 120;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

/// Who a client certificate names (x509 authentication, as
/// kube-apiserver's: the subject's CommonName is the user, each
/// Organization a group) and when it expires; None without a user.
pub fn cert_subject(der: &[u8]) -> Option<skiff_api::x509::Subject> {
    skiff_api::x509::certificate_subject(der).filter(|s| !s.common_name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_kept_in_the_secure_form() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node-token"), "cluster-secret\n").unwrap();
        std::fs::write(dir.path().join("agent-token"), "agent-secret").unwrap();
        let a = Pki::load_or_create(dir.path(), &[]).unwrap();
        let hash = ca_hash(&a.ca_pem);
        assert_eq!(a.node_token, format!("K10{hash}::server:cluster-secret"));
        assert_eq!(
            a.agent_token.as_deref(),
            Some(format!("K10{hash}::node:agent-secret").as_str())
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("agent-token")).unwrap(),
            format!("K10{hash}::node:agent-secret")
        );
        assert_eq!(join_token_secret(&a.node_token), "cluster-secret");
        assert_eq!(join_token_secret("bare"), "bare");
        // A token pinned to another CA is re-pinned to this one.
        let other = format!("K10{}::server:cluster-secret", "0".repeat(64));
        assert_eq!(secure_join_token(&a.ca_pem, &other, "server"), a.node_token);
    }

    #[test]
    fn generates_once_and_reloads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::load_or_create(dir.path(), &["10.0.0.1".into()]).unwrap();
        let b = Pki::load_or_create(dir.path(), &["10.0.0.1".into()]).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(a.serving_cert_pem, b.serving_cert_pem);
        assert_eq!(a.admin_token, b.admin_token);
        // The join token pins this CA.
        assert!(
            a.node_token
                .starts_with(&format!("K10{}::server:", ca_hash(&a.ca_pem))),
            "{}",
            a.node_token
        );
        assert_eq!(a.node_token, b.node_token);
        assert_eq!(a.agent_token, None);
        a.server_config().unwrap();
        // A new SAN re-issues the serving certificate from the same CA.
        let c = Pki::load_or_create(dir.path(), &["example.test".into()]).unwrap();
        assert_eq!(a.ca_pem, c.ca_pem);
        assert_ne!(a.serving_cert_pem, c.serving_cert_pem);
        assert!(
            a.token_kubeconfig("https://127.0.0.1:6443", "admin", "t")
                .contains("token: t")
        );
    }

    #[test]
    fn the_ca_lives_ten_years_and_the_serving_certificate_one_renewed_before_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        let now = jiff::Timestamp::now().as_second();
        let life = |pem: &str| {
            skiff_api::x509::certificate_subject(&pem_der(pem).unwrap())
                .unwrap()
                .not_after
                - now
        };
        assert!((3649 * 86_400..=3650 * 86_400).contains(&life(&pki.ca_pem)));
        assert!((364 * 86_400..=365 * 86_400).contains(&life(&pki.serving_cert_pem)));
        // A serving certificate within 120 days of expiry is re-issued at start.
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        let key = KeyPair::generate().unwrap();
        let ca_key = KeyPair::from_pem(&pki.ca_key_pem).unwrap();
        let ca = ca_params().unwrap();
        let old = params
            .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
            .unwrap();
        write_private(&dir.path().join("tls/serving.crt"), old.pem().as_bytes()).unwrap();
        let again = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert_ne!(again.serving_cert_pem, old.pem());
        assert!(life(&again.serving_cert_pem) > 364 * 86_400);
        assert_eq!(again.ca_pem, pki.ca_pem);
    }

    #[test]
    fn client_certificates_name_their_user_and_group_and_are_reused_until_renewal() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        let (cert, _) = pki
            .client_cert("kubelet", "system:node:n1", Some("system:nodes"))
            .unwrap();
        let subject = cert_subject(&pem_der(&cert).unwrap()).unwrap();
        assert_eq!(subject.common_name, "system:node:n1");
        assert_eq!(subject.organizations, vec!["system:nodes".to_string()]);
        let now = jiff::Timestamp::now().as_second();
        assert!(subject.not_after - now > 364 * 86_400 && subject.not_after - now <= 365 * 86_400);
        // The same subject again: the same certificate.
        let (again, _) = pki
            .client_cert("kubelet", "system:node:n1", Some("system:nodes"))
            .unwrap();
        assert_eq!(cert, again);
        // Another subject under the same name: a new one.
        let (other, _) = pki
            .client_cert("kubelet", "system:node:n2", Some("system:nodes"))
            .unwrap();
        assert_ne!(cert, other);
        // A certificate within 120 days of expiry is renewed.
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "system:node:n2");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(100);
        let key = KeyPair::generate().unwrap();
        let ca_key = KeyPair::from_pem(&pki.ca_key_pem).unwrap();
        let ca = ca_params().unwrap();
        let old = params
            .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
            .unwrap();
        write_private(
            &dir.path().join("tls/client-kubelet.crt"),
            old.pem().as_bytes(),
        )
        .unwrap();
        write_private(
            &dir.path().join("tls/client-kubelet.key"),
            key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let (renewed, _) = pki
            .client_cert("kubelet", "system:node:n2", Some("system:nodes"))
            .unwrap();
        assert_ne!(renewed, old.pem());
        let kc = pki
            .cert_kubeconfig(
                "https://127.0.0.1:6443",
                "kubelet",
                "system:node:n2",
                Some("system:nodes"),
            )
            .unwrap();
        assert!(
            kc.contains("client-certificate-data: ") && kc.contains("client-key-data: "),
            "{kc}"
        );
    }
}
