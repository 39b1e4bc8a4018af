//! How an agent joins a cluster: it checks the CA a server presents
//! against the hash in its join token (k3s's `K10<sha256>::server:<secret>`)
//! before it sends the token anywhere, then asks, as the token's
//! bootstrap user, for a client certificate per component through the
//! CertificateSigningRequest API: `system:node:NAME` in `system:nodes` for
//! the kubelet (`kubernetes.io/kube-apiserver-client-kubelet`), and the
//! proxy's, DNS's, ingress's and network policy's users. The controller
//! manager approves and signs them; the agent keeps them under
//! `<data-dir>/agent/` and asks again when one is within 120 days of expiry.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use sha2::Digest as _;

/// The CA hash a secure token pins, if it is one.
pub fn pinned_hash(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("K10")?;
    let (hash, _) = rest.split_once("::")?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hash)
}

/// The server's CA from `/cacerts`, not verified (a bare token).
pub async fn unverified_ca(server: &str) -> anyhow::Result<String> {
    let mut config = kube::Config::new(server.parse().context("--server is not a URL")?);
    config.accept_invalid_certs = true;
    let client = kube::Client::try_from(config)?;
    let req = http::Request::get("/cacerts")
        .body(Vec::new())
        .context("building the /cacerts request")?;
    client
        .request_text(req)
        .await
        .with_context(|| format!("fetching the cluster CA from {server}/cacerts"))
}

/// The server's CA from `/cacerts`, fetched without trusting anything and
/// accepted only when its SHA-256 is `hash`.
pub async fn pinned_ca(server: &str, hash: &str) -> anyhow::Result<String> {
    let pem = unverified_ca(server).await?;
    let got: String = sha2::Sha256::digest(pem.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    anyhow::ensure!(
        got.eq_ignore_ascii_case(hash),
        "token CA hash does not match the Cluster CA certificate hash: {hash} != {got}"
    );
    Ok(pem)
}

/// A client of `server` that trusts `ca_der` and presents a certificate.
pub fn cert_client(
    server: &str,
    ca_der: &[u8],
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<kube::Client> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut config = kube::Config::new(server.parse().context("--server is not a URL")?);
    config.root_cert = Some(vec![ca_der.to_vec()]);
    config.auth_info.client_certificate_data = Some(b64(cert_pem));
    config.auth_info.client_key_data = Some(b64(key_pem).into());
    Ok(kube::Client::try_from(config)?)
}

/// One component's identity.
pub struct Identity<'a> {
    /// File name under `<data-dir>/agent/` (client-NAME.crt/.key).
    pub name: &'a str,
    pub user: String,
    pub group: Option<&'a str>,
    pub signer: &'a str,
}

const RENEW_WITHIN: i64 = 120 * 86_400;

/// The certificate and key of `id`: the ones on disk while they name the
/// same subject and are not within 120 days of expiry, else new ones
/// through the CSR API as `bootstrap`.
pub async fn credentials(
    bootstrap: &kube::Client,
    dir: &Path,
    id: &Identity<'_>,
) -> anyhow::Result<(String, String)> {
    let cert_path = dir.join(format!("client-{}.crt", id.name));
    let key_path = dir.join(format!("client-{}.key", id.name));
    if let (Ok(cert), Ok(key)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        let now = jiff_now();
        let fresh = super::agent::pem_to_der(cert.as_bytes())
            .and_then(|der| skiff_apiserver::tls::cert_subject(&der))
            .is_some_and(|s| {
                s.common_name == id.user
                    && s.organizations.iter().map(String::as_str).eq(id.group)
                    && s.not_after - now > RENEW_WITHIN
            });
        if fresh {
            return Ok((cert, key));
        }
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, id.user.as_str());
    if let Some(group) = id.group {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, group);
    }
    let request = params.serialize_request(&key)?.pem()?;
    let cert = skiff_runtime::certificates::request_certificate(
        bootstrap,
        &skiff_runtime::certificates::Request {
            generate_name: "node-csr-",
            signer: id.signer,
            usages: &["digital signature", "key encipherment", "client auth"],
            request_pem: &request,
        },
        Duration::from_secs(300),
    )
    .await
    .with_context(|| format!("requesting the {} certificate for {}", id.name, id.user))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    skiff_apiserver::tls::write_private(&key_path, key.serialize_pem().as_bytes())?;
    skiff_apiserver::tls::write_private(&cert_path, cert.as_bytes())?;
    Ok((cert, key.serialize_pem()))
}

fn jiff_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_tokens_pin_a_hash() {
        let hash = "a".repeat(64);
        assert_eq!(
            pinned_hash(&format!("K10{hash}::server:s3cret")),
            Some(hash.as_str())
        );
        assert_eq!(pinned_hash("0123abcd"), None, "a bare token pins nothing");
        assert_eq!(pinned_hash("K10short::server:x"), None);
    }
}
