//! CertificateSigningRequests (certificates.k8s.io/v1) as kube-apiserver
//! serves them: the requester's identity stamped on create, what each of
//! the main resource, `/status` and `/approval` may change, validation
//! (the PKCS#10 request parses and its signature verifies), and the
//! admission plugins CertificateApproval, CertificateSigning and
//! CertificateSubjectRestriction. The signing and approving controllers
//! are in skiff-controllers.

use serde_json::{Value, json};
use skiff_api::validation::FieldError;

use crate::authz::{Attributes, UserInfo};
use crate::handlers::Req;
use crate::status::{ApiError, ApiResult};

pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

fn is_csr(req: &Req<'_>) -> bool {
    (req.info.group, req.info.kind) == ("certificates.k8s.io", "CertificateSigningRequest")
}

/// The bytes of a `[]byte` field (base64 in JSON).
fn bytes_at(obj: &Value, pointer: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let s = obj.pointer(pointer)?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// On create: the requester's identity into the spec, no status, the
/// request's subject checked against the signer's restrictions.
pub fn prepare_create(req: &Req<'_>, obj: &mut Value) -> ApiResult<()> {
    if !is_csr(req) {
        return Ok(());
    }
    let user: &UserInfo = &req.user;
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("username".into(), json!(user.name));
        spec.insert("uid".into(), json!(user.uid));
        spec.insert("groups".into(), json!(user.groups));
        if user.extra.is_empty() {
            spec.remove("extra");
        } else {
            spec.insert("extra".into(), json!(user.extra));
        }
    }
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
    let signer = obj
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if signer == KUBE_APISERVER_CLIENT
        && let Some(request) = bytes_at(obj, "/spec/request")
        && let Ok(r) = skiff_api::x509::request_subject(&request)
        && r.organizations.iter().any(|o| o == crate::authz::MASTERS)
    {
        return Err(ApiError::forbidden(format!(
            "certificatesigningrequests.certificates.k8s.io \"{}\" is forbidden: use of {KUBE_APISERVER_CLIENT} signer with system:masters group is not allowed",
            crate::handlers::name_of(obj)
        )));
    }
    populate_timestamps(obj, None);
    Ok(())
}

/// On update: the main resource changes metadata only; `/status` the
/// certificate and conditions other than Approved/Denied; `/approval` the
/// conditions. Approving needs `approve` and issuing a certificate `sign`
/// on the request's signer.
pub fn prepare_update(
    req: &Req<'_>,
    new: &mut Value,
    old: &Value,
    sub: Option<&str>,
) -> ApiResult<()> {
    if !is_csr(req) {
        return Ok(());
    }
    let mut merged = old.clone();
    merged["metadata"] = new.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let approval_types = ["Approved", "Denied"];
    let conditions = |v: &Value| -> Vec<Value> {
        v.pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match sub {
        Some("status") => {
            // Everything but the approval conditions, which stay as they were.
            let mut conds: Vec<Value> = conditions(new)
                .into_iter()
                .filter(|c| !approval_types.contains(&c["type"].as_str().unwrap_or_default()))
                .collect();
            conds.extend(
                conditions(old)
                    .into_iter()
                    .filter(|c| approval_types.contains(&c["type"].as_str().unwrap_or_default())),
            );
            merged["status"] = new.get("status").cloned().unwrap_or_else(|| json!({}));
            set_conditions(&mut merged, conds);
        }
        Some("approval") => {
            if !merged.get("status").is_some_and(Value::is_object) {
                merged["status"] = json!({});
            }
            set_conditions(&mut merged, conditions(new));
        }
        _ => {}
    }
    *new = merged;
    populate_timestamps(new, Some(old));
    let signer = new
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let has = |v: &Value, t: &str| conditions(v).iter().any(|c| c["type"] == t);
    if sub == Some("approval")
        && approval_types.iter().any(|t| has(new, t) && !has(old, t))
        && !may(req, "approve", &signer)
    {
        return Err(ApiError::forbidden(format!(
            "certificatesigningrequests.certificates.k8s.io \"{}\" is forbidden: user not permitted to approve requests with signerName \"{signer}\"",
            crate::handlers::name_of(new)
        )));
    }
    if sub == Some("status")
        && new.pointer("/status/certificate") != old.pointer("/status/certificate")
        && !may(req, "sign", &signer)
    {
        return Err(ApiError::forbidden(format!(
            "certificatesigningrequests.certificates.k8s.io \"{}\" is forbidden: user not permitted to sign requests with signerName \"{signer}\"",
            crate::handlers::name_of(new)
        )));
    }
    Ok(())
}

fn set_conditions(obj: &mut Value, conds: Vec<Value>) {
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        if conds.is_empty() {
            status.remove("conditions");
        } else {
            status.insert("conditions".into(), Value::Array(conds));
        }
    }
}

/// `verb` on `signers` named the signer or its `domain/*`
/// (certificates' authority.go).
fn may(req: &Req<'_>, verb: &str, signer: &str) -> bool {
    let ask = |name: &str| Attributes {
        user: req.user.clone(),
        verb: verb.into(),
        resource_request: true,
        api_group: "certificates.k8s.io".into(),
        resource: "signers".into(),
        name: name.into(),
        ..Default::default()
    };
    let domain = signer.split('/').next().unwrap_or_default();
    crate::authz::authorize(req.server, &ask(signer)).allowed()
        || crate::authz::authorize(req.server, &ask(&format!("{domain}/*"))).allowed()
}

/// lastUpdateTime defaults to now; lastTransitionTime to the old
/// condition's of the same type and status, else now.
fn populate_timestamps(obj: &mut Value, old: Option<&Value>) {
    let now = crate::handlers::now_rfc3339();
    let old_conds: Vec<Value> = old
        .and_then(|o| o.pointer("/status/conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(conds) = obj
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for c in conds {
        let Some(m) = c.as_object_mut() else { continue };
        if m.get("lastUpdateTime").is_none_or(Value::is_null) {
            m.insert("lastUpdateTime".into(), json!(now));
        }
        if m.get("lastTransitionTime").is_none_or(Value::is_null) {
            let before = old_conds
                .iter()
                .find(|o| o["type"] == m["type"] && o["status"] == m["status"])
                .and_then(|o| o.get("lastTransitionTime"))
                .filter(|t| !t.is_null())
                .cloned();
            m.insert(
                "lastTransitionTime".into(),
                before.unwrap_or_else(|| json!(now)),
            );
        }
    }
}

/// Validation of a request (ValidateCertificateSigningRequestCreate and
/// the update variants).
pub fn validate(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match bytes_at(obj, "/spec/request") {
        None => errs.push(FieldError::required("spec.request", "")),
        Some(b) => {
            if let Err(e) = skiff_api::x509::request_subject(&b) {
                errs.push(FieldError::invalid_repr("spec.request", "[]byte{...}", &e));
            }
        }
    }
    let usages: Vec<&str> = obj
        .pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if usages.is_empty() {
        errs.push(FieldError::required(
            "spec.usages",
            "usages must be provided",
        ));
    }
    for (i, u) in usages.iter().enumerate() {
        if !USAGES.contains(u) {
            errs.push(FieldError::not_supported(
                format!("spec.usages[{i}]"),
                &json!(u),
                USAGES,
            ));
        }
    }
    let signer = obj
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if signer.is_empty() {
        errs.push(FieldError::required("spec.signerName", ""));
    } else if signer.split('/').count() != 2
        || !signer.split('/').next().unwrap_or_default().contains('.')
    {
        errs.push(FieldError::invalid(
            "spec.signerName",
            &json!(signer),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
    } else {
        for e in skiff_api::validation::is_qualified_name(signer.replace('/', ".").as_str()) {
            errs.push(FieldError::invalid("spec.signerName", &json!(signer), &e));
        }
    }
    if let Some(secs) = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        && secs < 600
    {
        errs.push(FieldError::invalid(
            "spec.expirationSeconds",
            &json!(secs),
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    let conds: Vec<Value> = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut seen = Vec::new();
    for (i, c) in conds.iter().enumerate() {
        let t = c["type"].as_str().unwrap_or_default();
        let path = format!("status.conditions[{i}]");
        if t.is_empty() {
            errs.push(FieldError::required(format!("{path}.type"), ""));
        }
        if ["Approved", "Denied", "Failed"].contains(&t) {
            if seen.contains(&t) {
                errs.push(FieldError::duplicate(format!("{path}.type"), &json!(t)));
            }
            seen.push(t);
        }
        match c["status"].as_str().unwrap_or_default() {
            "True" | "False" | "Unknown" => {}
            "" => errs.push(FieldError::required(format!("{path}.status"), "")),
            s => errs.push(FieldError::not_supported(
                format!("{path}.status"),
                &json!(s),
                &["False", "True", "Unknown"],
            )),
        }
    }
    if seen.contains(&"Approved") && seen.contains(&"Denied") {
        errs.push(FieldError::invalid(
            "status.conditions",
            &json!("Approved"),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    if let Some(cert) = bytes_at(obj, "/status/certificate")
        && !cert.is_empty()
        && !skiff_api::x509::valid_certificates(&cert)
    {
        errs.push(FieldError::invalid_repr(
            "status.certificate",
            "<certificate data>",
            "must contain at least one CERTIFICATE PEM block",
        ));
    }
    if let Some(old) = old {
        let old_cert = old
            .pointer("/status/certificate")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let new_cert = obj
            .pointer("/status/certificate")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !old_cert.is_empty() && old_cert != new_cert {
            errs.push(FieldError::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
        for t in ["Approved", "Denied"] {
            let had = old
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|c| c["type"] == t));
            if had && !seen.contains(&t) {
                errs.push(FieldError::forbidden(
                    "status.conditions",
                    &format!("updates may not remove a condition of type {t:?}"),
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_pem(cn: &str, org: Option<&str>) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if let Some(o) = org {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, o);
        }
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn requests_parse_and_verify() {
        let pem = csr_pem("system:node:n1", Some("system:nodes"));
        let r = skiff_api::x509::request_subject(pem.as_bytes()).unwrap();
        assert_eq!(r.common_name, "system:node:n1");
        assert_eq!(r.organizations, vec!["system:nodes".to_string()]);
        assert!(skiff_api::x509::request_subject(b"not pem").is_err());
        // A tampered request fails its signature.
        let mut der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents;
        let n = der.len();
        der[n - 3] ^= 0x55;
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(&der)
            }
        );
        assert!(skiff_api::x509::request_subject(tampered.as_bytes()).is_err());
    }

    #[test]
    fn validation_as_kube_apiserver() {
        let good = json!({"metadata": {"name": "c"}, "spec": {
            "request": b64(&csr_pem("u", None)), "signerName": "example.com/signer",
            "usages": ["client auth"], "expirationSeconds": 3600}});
        assert!(
            validate(&good, None).is_empty(),
            "{:?}",
            validate(&good, None)
        );
        let mut bad = good.clone();
        bad["spec"]["signerName"] = json!("nosigner");
        bad["spec"]["usages"] = json!(["teleport"]);
        bad["spec"]["expirationSeconds"] = json!(60);
        bad["spec"]["request"] = json!(b64("garbage"));
        let fields: Vec<String> = validate(&bad, None).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            vec![
                "spec.request",
                "spec.usages[0]",
                "spec.signerName",
                "spec.expirationSeconds"
            ]
        );
        let mut both = good.clone();
        both["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]});
        assert!(
            validate(&both, None)
                .iter()
                .any(|e| e.message.contains("mutually exclusive"))
        );
        let mut approved = good.clone();
        approved["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        let errs = validate(&good, Some(&approved));
        assert!(
            errs.iter().any(|e| e
                .message
                .contains("may not remove a condition of type \"Approved\"")),
            "{errs:?}"
        );
    }
}
