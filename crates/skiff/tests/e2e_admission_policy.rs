//! ValidatingAdmissionPolicy end to end with the real kubectl: the
//! Kubernetes documentation's replica limit, applied with kubectl, refuses
//! a Deployment in the namespace its binding selects and no other.

mod support;
use support::{Server, eventually};

const POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: "demo-policy.example.com"
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups:   ["apps"]
      apiVersions: ["v1"]
      operations:  ["CREATE", "UPDATE"]
      resources:   ["deployments"]
  validations:
    - expression: "object.spec.replicas <= 5"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: "demo-binding-test.example.com"
spec:
  policyName: "demo-policy.example.com"
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        environment: test
---
apiVersion: v1
kind: Namespace
metadata:
  name: test
  labels:
    environment: test
---
apiVersion: v1
kind: Namespace
metadata:
  name: staging
"#;

#[test]
fn kubectl_applies_a_policy_that_limits_replicas() {
    let s = Server::start();
    let out = s.ok_stdin(&["apply", "-f", "-"], POLICY);
    assert!(
        out.contains("validatingadmissionpolicy.admissionregistration.k8s.io/demo-policy.example.com created")
            && out.contains("validatingadmissionpolicybinding.admissionregistration.k8s.io/demo-binding-test.example.com created"),
        "{out}"
    );
    let mut message = String::new();
    eventually("the policy refuses six replicas", &s, || {
        let out = s.kubectl(&[
            "create",
            "deployment",
            "web",
            "--image=busybox",
            "--replicas=6",
            "-n",
            "test",
        ]);
        message = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            s.ok(&["delete", "deployment", "web", "-n", "test"]);
        }
        !out.status.success()
    });
    assert!(
        message.contains(
            "ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"
        ),
        "{message}"
    );
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=3",
        "-n",
        "test",
    ]);
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=6",
        "-n",
        "staging",
    ]);
    // An update in the bound namespace is checked too.
    let err = s.fails(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "test",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":8}}"#,
    ]);
    assert!(err.contains("denied request"), "{err}");
}
