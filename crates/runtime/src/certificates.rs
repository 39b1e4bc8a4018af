//! Asking for a certificate through the CertificateSigningRequest API
//! (certificates.k8s.io/v1), as client-go's certificate manager does:
//! create the request, then watch it until it is issued, denied or failed.
//! The key pair and the PEM request are the caller's.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest as Csr;
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("certificate request: {0}")]
    Api(#[from] kube::Error),
    #[error("watching the certificate request: {0}")]
    Watch(#[from] kube::runtime::wait::Error),
    #[error("certificate request {name}: {condition} {message}")]
    Refused {
        name: String,
        condition: String,
        message: String,
    },
    #[error(
        "certificate request {name} was not issued within {after:?} (is the controller manager running?)"
    )]
    Timeout { name: String, after: Duration },
    #[error("certificate request {name} was deleted before it was issued")]
    Deleted { name: String },
    #[error("certificate request {name}: the issued certificate is not PEM")]
    NotPem { name: String },
}

/// What to ask for.
pub struct Request<'a> {
    /// metadata.generateName of the request.
    pub generate_name: &'a str,
    pub signer: &'a str,
    pub usages: &'a [&'a str],
    /// The PEM `CERTIFICATE REQUEST`.
    pub request_pem: &'a str,
}

fn refused(csr: &Csr) -> Option<(String, String)> {
    csr.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Denied" || c.type_ == "Failed")
        .map(|c| (c.type_.clone(), c.message.clone().unwrap_or_default()))
}

fn issued(csr: &Csr) -> Option<&ByteString> {
    csr.status
        .as_ref()?
        .certificate
        .as_ref()
        .filter(|c| !c.0.is_empty())
}

/// Create the request and wait, at most `timeout`, for its PEM certificate.
pub async fn request_certificate(
    client: &kube::Client,
    request: &Request<'_>,
    timeout: Duration,
) -> Result<String, CsrError> {
    let csr = Csr {
        metadata: kube::api::ObjectMeta {
            generate_name: Some(request.generate_name.into()),
            ..Default::default()
        },
        spec: k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec {
            request: ByteString(request.request_pem.as_bytes().to_vec()),
            signer_name: request.signer.into(),
            usages: Some(request.usages.iter().map(|u| (*u).to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let api: Api<Csr> = Api::all(client.clone());
    let created = api.create(&PostParams::default(), &csr).await?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, signer = request.signer, "asked for a certificate");
    let done = |c: Option<&Csr>| c.is_some_and(|c| issued(c).is_some() || refused(c).is_some());
    let done_or_gone = move |c: Option<&Csr>| c.is_none() || done(c);
    let answer =
        match tokio::time::timeout(timeout, await_condition(api, &name, done_or_gone)).await {
            Err(_) => {
                return Err(CsrError::Timeout {
                    name,
                    after: timeout,
                });
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(c)) => c,
        };
    let Some(csr) = answer else {
        return Err(CsrError::Deleted { name });
    };
    if let Some((condition, message)) = refused(&csr) {
        return Err(CsrError::Refused {
            name,
            condition,
            message,
        });
    }
    let pem = issued(&csr).map(|c| c.0.clone()).unwrap_or_default();
    String::from_utf8(pem).map_err(|_| CsrError::NotPem { name })
}
