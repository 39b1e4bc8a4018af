//! What Kubernetes reads from X.509 certificates and PKCS#10 certificate
//! requests: the subject's CommonName is the user and each Organization a
//! group (x509 client authentication, the CSR API's approval and signing).
//! One parser for the API server, the controllers and the kubelet.

use x509_parser::prelude::FromDer;

/// A certificate's or request's subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// Subject alternative names: DNS names, IP addresses, e-mail
    /// addresses and URIs.
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
    /// A certificate's notBefore and notAfter (Unix seconds); 0 for a request.
    pub not_before: i64,
    pub not_after: i64,
}

impl Subject {
    /// Any subject alternative name at all.
    pub fn has_sans(&self) -> bool {
        !(self.dns_names.is_empty()
            && self.ip_addresses.is_empty()
            && self.emails.is_empty()
            && self.uris.is_empty())
    }

    fn add_names(&mut self, names: &[x509_parser::extensions::GeneralName<'_>]) {
        use x509_parser::extensions::GeneralName;
        for n in names {
            match n {
                GeneralName::DNSName(d) => self.dns_names.push((*d).to_string()),
                GeneralName::RFC822Name(e) => self.emails.push((*e).to_string()),
                GeneralName::URI(u) => self.uris.push((*u).to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        self.ip_addresses.push(std::net::IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        self.ip_addresses.push(std::net::IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
}

/// The subject named by `name`: CN and O, no names or validity yet.
fn subject_of(name: &x509_parser::x509::X509Name<'_>) -> Subject {
    let common_name = name
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let organizations = name
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Subject {
        common_name,
        organizations,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        emails: Vec::new(),
        uris: Vec::new(),
        not_before: 0,
        not_after: 0,
    }
}

/// The subject of a DER certificate (its chain is the caller's to verify).
pub fn certificate_subject(der: &[u8]) -> Option<Subject> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut subject = subject_of(cert.subject());
    subject.not_before = cert.validity().not_before.timestamp();
    subject.not_after = cert.validity().not_after.timestamp();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        subject.add_names(&san.value.general_names);
    }
    Some(subject)
}

/// The subject a PEM certificate request asks for, once it parses and its
/// signature verifies (certificates.ParseCSR); the error in Go's words.
pub fn request_subject(pem: &[u8]) -> Result<Subject, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    if block.label != "CERTIFICATE REQUEST" && block.label != "NEW CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("asn1: {e}"))?;
    csr.verify_signature()
        .map_err(|_| "x509: ECDSA verification failure".to_string())?;
    let mut subject = subject_of(&csr.certification_request_info.subject);
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
            subject.add_names(&san.general_names);
        }
    }
    Ok(subject)
}

/// Every PEM block a CERTIFICATE that parses, and at least one.
pub fn valid_certificates(pem: &[u8]) -> bool {
    let mut any = false;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let Ok(block) = block else { return false };
        if block.label != "CERTIFICATE" || block.parse_x509().is_err() {
            return false;
        }
        any = true;
    }
    any
}
