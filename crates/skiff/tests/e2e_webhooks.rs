//! Admission webhooks end to end with the real kubectl: configurations
//! applied with kubectl register a validating webhook that refuses and a
//! mutating one that labels ConfigMaps, served over HTTPS by a small server
//! in the test with a CA of its own.

mod support;
use base64::Engine;
use support::{Server, eventually};

#[test]
fn kubectl_sees_webhooks_refuse_and_patch() {
    let s = Server::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let hook = runtime.block_on(skiff_testsupport::webhook::serve());
    let ca = base64::engine::general_purpose::STANDARD.encode(&hook.ca_pem);
    let configs = format!(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: deny-labelled
webhooks:
- name: deny.example.com
  clientConfig:
    url: https://{addr}/deny
    caBundle: {ca}
  rules:
  - operations: ["CREATE", "UPDATE"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["configmaps"]
  sideEffects: None
  admissionReviewVersions: ["v1"]
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: label-all
webhooks:
- name: mutate.example.com
  clientConfig:
    url: https://{addr}/mutate
    caBundle: {ca}
  rules:
  - operations: ["CREATE"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["configmaps"]
  sideEffects: None
  admissionReviewVersions: ["v1"]
"#,
        addr = hook.addr
    );
    let out = s.ok_stdin(&["apply", "-f", "-"], &configs);
    assert!(
        out.contains(
            "validatingwebhookconfiguration.admissionregistration.k8s.io/deny-labelled created"
        ) && out.contains(
            "mutatingwebhookconfiguration.admissionregistration.k8s.io/label-all created"
        ),
        "{out}"
    );
    let listed = s.ok(&["get", "validatingwebhookconfigurations"]);
    assert!(listed.contains("deny-labelled"), "{listed}");

    let denied =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  labels:\n    deny: \"true\"\n";
    let mut message = String::new();
    eventually("the validating webhook refuses", &s, || {
        let out = s.kubectl_stdin(&["apply", "-f", "-"], denied);
        message = String::from_utf8_lossy(&out.stderr).into_owned();
        !out.status.success()
    });
    assert!(
        message.contains(
            "admission webhook \"deny.example.com\" denied the request: CREATE bad is not welcome"
        ),
        "{message}"
    );
    eventually("the mutating webhook labels new ConfigMaps", &s, || {
        let name = format!("ok-{}", next());
        s.ok(&["create", "configmap", &name, "--from-literal=a=b"]);
        s.json(&["get", "configmap", &name])["metadata"]["labels"]["mutated"] == "yes"
    });
    // A dry run with sideEffects None goes through both.
    let out = s.ok(&[
        "create",
        "configmap",
        "dry",
        "--from-literal=a=b",
        "--dry-run=server",
        "-o",
        "json",
    ]);
    let dry: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(dry["metadata"]["labels"]["mutated"], "yes");
    // Removing the configurations lifts them.
    s.ok(&["delete", "validatingwebhookconfiguration", "deny-labelled"]);
    eventually("the refused ConfigMap can be created", &s, || {
        s.kubectl_stdin(&["apply", "-f", "-"], denied)
            .status
            .success()
    });
    drop(runtime);
}

/// A new number for each ConfigMap name.
fn next() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
