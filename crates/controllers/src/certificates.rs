//! The certificate controllers of kube-controller-manager
//! (pkg/controller/certificates): **csrapproving** approves kubelet client
//! requests (`kubernetes.io/kube-apiserver-client-kubelet`) whose requester
//! a SubjectAccessReview allows to ask for one (`nodeclient` for a new
//! node, `selfnodeclient` for its own renewal), and **csrsigning** issues
//! the certificate of every approved request for the `kubernetes.io`
//! client signers from the cluster CA.
//!
//! skiff's agents also ask, with their join token, for the client
//! certificates of the node's other components (the service proxy, DNS,
//! ingress and network policy users, through
//! `kubernetes.io/kube-apiserver-client`); the approver approves those
//! on the same SubjectAccessReview as a new node's, as k3s's supervisor
//! issues them for its node token.
//!
//! Kubelet serving requests (`kubernetes.io/kubelet-serving`) are approved
//! when the node asks for its own names: the requester is the node the
//! subject names, and every DNS name and IP address is one its Node
//! reports (kube-controller-manager leaves these to an external approver;
//! k3s signs its agents' serving certificates itself). The API server
//! then verifies each kubelet against the cluster CA.

use std::sync::Arc;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest as Csr;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::loopkit::{self, Outcome, Store, WorkQueue};

const CONTROLLER: &str = "csr";
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// The CA the signer issues from, and for how long.
#[derive(Clone, Debug)]
pub struct Signing {
    pub ca_pem: String,
    pub key_pem: String,
    pub duration: std::time::Duration,
}

/// What a request asks for (skiff_api's one X.509 reader).
pub use skiff_api::x509::Subject;

/// The subject of a PEM request whose signature verifies.
pub fn parse(pem: &[u8]) -> Option<Subject> {
    skiff_api::x509::request_subject(pem).ok()
}

fn usages(csr: &Csr) -> Vec<&str> {
    csr.spec
        .usages
        .iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

/// A kubelet client request (certificates' isNodeClientCert): O exactly
/// system:nodes, CN system:node:NAME, no SANs, client usages only.
pub fn is_node_client(csr: &Csr, subject: &Subject) -> bool {
    is_node_subject(subject) && !subject.has_sans() && usages_for(csr, "client auth")
}

/// O exactly system:nodes and CN system:node:NAME.
fn is_node_subject(subject: &Subject) -> bool {
    subject.organizations == ["system:nodes"]
        && subject
            .common_name
            .strip_prefix("system:node:")
            .is_some_and(|n| !n.is_empty())
}

/// The usages include `purpose` ("client auth" or "server auth") and
/// nothing but it, digital signature and key encipherment.
fn usages_for(csr: &Csr, purpose: &str) -> bool {
    let u = usages(csr);
    u.contains(&purpose)
        && u.iter()
            .all(|x| ["key encipherment", "digital signature", purpose].contains(x))
}

/// The users of a node's own components (no groups).
pub const NODE_COMPONENTS: &[&str] = &[
    "system:kube-proxy",
    "system:skiff-dns",
    "system:skiff-ingress",
    "system:skiff-netpol",
];

/// A node component's client request: CN one of [`NODE_COMPONENTS`], no
/// O, no SANs, client usages only.
pub fn is_node_component(csr: &Csr, subject: &Subject) -> bool {
    NODE_COMPONENTS.contains(&subject.common_name.as_str())
        && subject.organizations.is_empty()
        && !subject.has_sans()
        && usages_for(csr, "client auth")
}

/// A kubelet serving request (the signer's isKubeletServing): O exactly
/// system:nodes, CN system:node:NAME, DNS or IP names and nothing else,
/// server usages only.
pub fn is_kubelet_serving(csr: &Csr, subject: &Subject) -> bool {
    is_node_subject(subject)
        && (!subject.dns_names.is_empty() || !subject.ip_addresses.is_empty())
        && subject.emails.is_empty()
        && subject.uris.is_empty()
        && usages_for(csr, "server auth")
}

/// Whether a kubelet serving request may be approved: asked for by the
/// node it names (the requester is `system:node:NAME` in system:nodes),
/// for names that node's Node object reports as its addresses (its name
/// counts as a host name). kube-controller-manager leaves these requests
/// to an external approver; skiff approves them as k3s's supervisor
/// issues serving certificates to its agents, so that the API server can
/// verify every kubelet it talks to.
pub fn serving_names_allowed(csr: &Csr, subject: &Subject, node: &Node) -> bool {
    let spec = &csr.spec;
    let requester_is_node = spec.username.as_deref() == Some(subject.common_name.as_str())
        && spec.groups.iter().flatten().any(|g| g == "system:nodes");
    let Some(name) = subject.common_name.strip_prefix("system:node:") else {
        return false;
    };
    if !requester_is_node || node.metadata.name.as_deref() != Some(name) {
        return false;
    }
    let addresses: Vec<(&str, &str)> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .map(|a| (a.type_.as_str(), a.address.as_str()))
        .collect();
    let dns_ok = subject.dns_names.iter().all(|d| {
        d == name
            || addresses
                .iter()
                .any(|(t, a)| matches!(*t, "Hostname" | "InternalDNS" | "ExternalDNS") && a == d)
    });
    // Never an address ValidateNonSpecialIP refuses (unspecified,
    // loopback, link-local): nothing should reach a node's own services.
    let special = |ip: &std::net::IpAddr| {
        !skiff_api::validation::validate_non_special_ip(&ip.to_string(), "").is_empty()
    };
    let ips_ok = subject.ip_addresses.iter().all(|ip| {
        !special(ip)
            && addresses.iter().any(|(t, a)| {
                matches!(*t, "InternalIP" | "ExternalIP")
                    && a.parse::<std::net::IpAddr>().is_ok_and(|a| a == *ip)
            })
    });
    dns_ok && ips_ok
}

fn has_condition(csr: &Csr, t: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == t))
}

pub async fn run(ctx: crate::Context) {
    let queue = Arc::new(WorkQueue::<String>::new());
    let q = queue.clone();
    let (csrs, informer) = ctx.informers.get::<Csr>().informer(move |ev, _| {
        if let Some(name) = loopkit::event_object(ev).and_then(|c| c.metadata.name.clone()) {
            q.add(name);
        }
    });
    // Kubelet serving requests are checked against their Node's
    // addresses: a request that came before its Node is retried later.
    let (nodes, node_informer) = ctx.informers.get::<Node>().informer(|_, _| {});
    let signing = ctx.config.signing.clone();
    let client = ctx.client.clone();
    let worker = async {
        if !loopkit::wait_ready(&csrs).await || !loopkit::wait_ready(&nodes).await {
            return;
        }
        loop {
            let key = queue.next().await;
            let outcome = crate::loopkit::guarded(
                CONTROLLER,
                &key,
                reconcile(&client, &csrs, &nodes, signing.as_ref(), &key),
            )
            .await;
            queue.finish(CONTROLLER, key, outcome);
        }
    };
    tokio::join!(informer, node_informer, worker);
}

async fn reconcile(
    client: &kube::Client,
    csrs: &Store<Csr>,
    nodes: &Store<Node>,
    signing: Option<&Signing>,
    name: &str,
) -> Outcome {
    let Some(csr) = csrs.get(&crate::ctrlutil::informer::ObjKey::new("", name)) else {
        return Ok(None);
    };
    let api: Api<Csr> = Api::all(client.clone());
    if has_condition(&csr, "Denied") || has_condition(&csr, "Failed") {
        return Ok(None);
    }
    let signer = csr.spec.signer_name.as_str();
    let subject = parse(&csr.spec.request.0);
    if !has_condition(&csr, "Approved") {
        let approve = match &subject {
            Some(s) if signer == KUBELET_CLIENT && is_node_client(&csr, s) => {
                may_request(client, &csr, s).await?
            }
            Some(s) if signer == APISERVER_CLIENT && is_node_component(&csr, s) => {
                may_request(client, &csr, s).await?
            }
            Some(s) if signer == KUBELET_SERVING && is_kubelet_serving(&csr, s) => {
                let node_name = s.common_name.trim_start_matches("system:node:");
                match nodes.get(&crate::ctrlutil::informer::ObjKey::new("", node_name)) {
                    Some(node) => serving_names_allowed(&csr, s, &node),
                    // Its Node is not registered yet (or not yet seen).
                    None => return Ok(Some(std::time::Duration::from_millis(500))),
                }
            }
            _ => false,
        };
        if approve {
            let mut conditions: Vec<serde_json::Value> = csr
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .map(|c| {
                    c.iter()
                        .filter_map(|c| serde_json::to_value(c).ok())
                        .collect()
                })
                .unwrap_or_default();
            conditions.push(json!({
                "type": "Approved", "status": "True", "reason": "AutoApproved",
                "message": match signer {
                    KUBELET_CLIENT => "Auto approving kubelet client certificate after SubjectAccessReview.",
                    KUBELET_SERVING => "Auto approving kubelet serving certificate for the names its Node reports.",
                    _ => "Auto approving node component client certificate after SubjectAccessReview.",
                }
            }));
            // The resourceVersion makes it a compare-and-swap: a conflict
            // comes back as a newer event.
            let patch = json!({
                "metadata": {"resourceVersion": csr.metadata.resource_version},
                "status": {"conditions": conditions}
            });
            match api
                .patch_approval(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::info!(csr = %name, signer, "approved certificate request"),
                Err(e) if loopkit::is_status(&e, 404) || loopkit::is_status(&e, 409) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(None);
    }
    // Approved: issue the certificate, once.
    let Some(signing) = signing else {
        return Ok(None);
    };
    if csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
    {
        return Ok(None);
    }
    if ![KUBELET_CLIENT, APISERVER_CLIENT, KUBELET_SERVING].contains(&signer) {
        return Ok(None);
    }
    let valid = subject.as_ref().is_some_and(|s| match signer {
        KUBELET_CLIENT => is_node_client(&csr, s),
        KUBELET_SERVING => is_kubelet_serving(&csr, s),
        _ => usages(&csr).contains(&"client auth"),
    });
    let patch = if valid {
        match sign(&csr, signing) {
            Ok(pem) => {
                use base64::Engine;
                json!({"status": {"certificate": base64::engine::general_purpose::STANDARD.encode(pem)}})
            }
            Err(e) => failed(&csr, &format!("the certificate could not be issued: {e}")),
        }
    } else {
        failed(&csr, &format!("invalid request for signer {signer:?}"))
    };
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => tracing::info!(csr = %name, signer, "signed certificate request"),
        Err(e) if loopkit::is_status(&e, 404) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(None)
}

fn failed(csr: &Csr, message: &str) -> serde_json::Value {
    let mut conditions: Vec<serde_json::Value> = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    conditions.push(json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": message}));
    json!({"status": {"conditions": conditions}})
}

/// A SubjectAccessReview for the requester: `create` on
/// certificatesigningrequests/selfnodeclient when renewing its own
/// certificate, else /nodeclient.
async fn may_request(
    client: &kube::Client,
    csr: &Csr,
    subject: &Subject,
) -> Result<bool, kube::Error> {
    let spec = &csr.spec;
    let sub = if spec.username.as_deref() == Some(subject.common_name.as_str()) {
        "selfnodeclient"
    } else {
        "nodeclient"
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: spec.username.clone(),
            uid: spec.uid.clone(),
            groups: spec.groups.clone(),
            extra: spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(sub.into()),
                verb: Some("create".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Issue the request's certificate from the CA: its subject and public
/// key, the usages asked for, valid from now (less five minutes of clock
/// skew) for the shorter of the signer's duration and expirationSeconds.
pub fn sign(csr: &Csr, signing: &Signing) -> Result<String, rcgen::Error> {
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let mut request = rcgen::CertificateSigningRequestParams::from_pem(&pem)?;
    let mut duration = signing.duration;
    if let Some(secs) = csr
        .spec
        .expiration_seconds
        .and_then(|s| u64::try_from(s).ok())
    {
        duration = duration.min(std::time::Duration::from_secs(secs));
    }
    let now = time::OffsetDateTime::now_utc();
    let params = &mut request.params;
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + duration;
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = Vec::new();
    params.extended_key_usages = Vec::new();
    for u in usages(csr) {
        match u {
            "digital signature" => params
                .key_usages
                .push(rcgen::KeyUsagePurpose::DigitalSignature),
            "key encipherment" => params
                .key_usages
                .push(rcgen::KeyUsagePurpose::KeyEncipherment),
            "client auth" => params
                .extended_key_usages
                .push(rcgen::ExtendedKeyUsagePurpose::ClientAuth),
            "server auth" => params
                .extended_key_usages
                .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth),
            _ => {}
        }
    }
    let key = rcgen::KeyPair::from_pem(&signing.key_pem)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&signing.ca_pem, key)?;
    Ok(request.signed_by(&issuer)?.pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, org: &str, usages: &[&str]) -> Csr {
        request_with_names(cn, org, usages, &[])
    }

    fn request_with_names(cn: &str, org: &str, usages: &[&str], names: &[&str]) -> Csr {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let request = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(pem)
        };
        serde_json::from_value(json!({"metadata": {"name": "r"}, "spec": {
            "request": request, "signerName": KUBELET_CLIENT, "usages": usages}}))
        .unwrap()
    }

    #[test]
    fn node_client_requests_are_recognised_as_upstream() {
        let ok = request(
            "system:node:n1",
            "system:nodes",
            &["digital signature", "client auth"],
        );
        assert!(is_node_client(&ok, &parse(&ok.spec.request.0).unwrap()));
        let server = request("system:node:n1", "system:nodes", &["server auth"]);
        assert!(!is_node_client(
            &server,
            &parse(&server.spec.request.0).unwrap()
        ));
        let masters = request("system:node:n1", "system:masters", &["client auth"]);
        assert!(!is_node_client(
            &masters,
            &parse(&masters.spec.request.0).unwrap()
        ));
        let user = request("alice", "system:nodes", &["client auth"]);
        assert!(!is_node_client(
            &user,
            &parse(&user.spec.request.0).unwrap()
        ));
    }

    fn node(name: &str, addresses: &[(&str, &str)]) -> Node {
        let addresses: Vec<serde_json::Value> = addresses
            .iter()
            .map(|(t, a)| json!({"type": t, "address": a}))
            .collect();
        serde_json::from_value(
            json!({"metadata": {"name": name}, "status": {"addresses": addresses}}),
        )
        .unwrap()
    }

    fn serving(names: &[&str], requester: &str) -> (Csr, Subject) {
        let mut csr = request_with_names(
            "system:node:n1",
            "system:nodes",
            &["digital signature", "key encipherment", "server auth"],
            names,
        );
        csr.spec.signer_name = KUBELET_SERVING.into();
        csr.spec.username = Some(requester.into());
        csr.spec.groups = Some(vec!["system:nodes".into(), "system:authenticated".into()]);
        let subject = parse(&csr.spec.request.0).unwrap();
        (csr, subject)
    }

    #[test]
    fn kubelet_serving_requests_are_approved_only_for_the_nodes_own_names() {
        let n1 = node("n1", &[("InternalIP", "10.0.0.5"), ("Hostname", "n1.lan")]);
        let (csr, s) = serving(&["n1", "n1.lan", "10.0.0.5"], "system:node:n1");
        assert_eq!(s.dns_names, ["n1", "n1.lan"]);
        assert_eq!(
            s.ip_addresses,
            ["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(is_kubelet_serving(&csr, &s));
        assert!(serving_names_allowed(&csr, &s, &n1));
        // Another node's address, or a name the Node does not report.
        let (csr, s) = serving(&["n1", "10.0.0.6"], "system:node:n1");
        assert!(!serving_names_allowed(&csr, &s, &n1));
        let (csr, s) = serving(&["api.example.com"], "system:node:n1");
        assert!(!serving_names_allowed(&csr, &s, &n1));
        // Asked for by someone else than the node it names.
        let (csr, s) = serving(&["n1", "10.0.0.5"], "system:node:n2");
        assert!(!serving_names_allowed(&csr, &s, &n1));
        let (csr, s) = serving(&["n1", "10.0.0.5"], "system:node:n1");
        assert!(!serving_names_allowed(
            &csr,
            &s,
            &node("n2", &[("InternalIP", "10.0.0.5")])
        ));
        // No names, or client usages: not a serving request.
        let (csr, s) = serving(&[], "system:node:n1");
        assert!(!is_kubelet_serving(&csr, &s));
        let (mut csr, s) = serving(&["n1"], "system:node:n1");
        csr.spec.usages = Some(vec!["client auth".into()]);
        assert!(!is_kubelet_serving(&csr, &s));
    }

    #[test]
    fn serving_certificates_carry_the_requested_names() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let signing = Signing {
            ca_pem: ca.self_signed(&ca_key).unwrap().pem(),
            key_pem: ca_key.serialize_pem(),
            duration: std::time::Duration::from_secs(86_400),
        };
        let (csr, _) = serving(&["n1", "10.0.0.5"], "system:node:n1");
        let pem = sign(&csr, &signing).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let s = skiff_api::x509::certificate_subject(&block.contents).unwrap();
        assert_eq!(s.dns_names, ["n1"]);
        assert_eq!(
            s.ip_addresses,
            ["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(s.organizations, ["system:nodes"]);
    }

    #[test]
    fn signs_with_the_ca_for_the_shorter_duration() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test-ca");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let signing = Signing {
            ca_pem,
            key_pem: ca_key.serialize_pem(),
            duration: std::time::Duration::from_secs(365 * 86_400),
        };
        let mut csr = request("system:node:n1", "system:nodes", &["client auth"]);
        csr.spec.expiration_seconds = Some(3600);
        let pem = sign(&csr, &signing).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "system:node:n1"
        );
        assert_eq!(
            cert.issuer()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "test-ca"
        );
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(life, 3600 + 300);
    }
}
