//! Pod Security Admission with the real kubectl: a namespace labelled
//! restricted refuses a privileged pod with Kubernetes' message and admits a
//! compliant one; warn prints kubectl's `Warning:` lines; raising enforce
//! warns about existing pods; `--pod-security-default` applies to unlabelled
//! namespaces.

mod support;
use support::Server;

const COMPLIANT: &str = "apiVersion: v1
kind: Pod
metadata:
  name: fine
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    seccompProfile:
      type: RuntimeDefault
  containers:
  - name: c
    image: busybox:skiff
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: [ALL]
";

#[test]
fn restricted_namespace_refuses_a_privileged_pod() {
    let s = Server::start();
    s.ok(&["create", "namespace", "locked"]);
    s.ok(&[
        "label",
        "ns",
        "locked",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let msg = s.fails(&[
        "run",
        "p",
        "-n",
        "locked",
        "--image=busybox:skiff",
        "--privileged",
    ]);
    assert!(
        msg.contains(
            "Error from server (Forbidden): pods \"p\" is forbidden: violates PodSecurity \"restricted:latest\": \
             privileged (container \"p\" must not set securityContext.privileged=true), \
             allowPrivilegeEscalation != false (container \"p\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"p\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"p\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"p\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        ),
        "{msg}"
    );
    let out = s.kubectl_stdin(&["apply", "-n", "locked", "-f", "-"], COMPLIANT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("Warning"), "{stderr}");
    s.ok(&["get", "pod", "fine", "-n", "locked"]);

    // warn: admitted, with kubectl's Warning line.
    s.ok(&["create", "namespace", "team"]);
    s.ok(&[
        "label",
        "ns",
        "team",
        "pod-security.kubernetes.io/warn=baseline",
    ]);
    let out = s.kubectl(&[
        "run",
        "h",
        "-n",
        "team",
        "--image=busybox:skiff",
        "--privileged",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "Warning: would violate PodSecurity \"baseline:latest\": privileged (container \"h\" must not set securityContext.privileged=true)"
        ),
        "{stderr}"
    );
    // Raising enforce names the existing pods that would be refused.
    let out = s.kubectl(&[
        "label",
        "ns",
        "team",
        "pod-security.kubernetes.io/enforce=baseline",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "Warning: existing pods in namespace \"team\" violate the new PodSecurity enforce level \"baseline:latest\""
        ) && stderr.contains("Warning: h: privileged"),
        "{stderr}"
    );
    // An invalid level is refused.
    let msg = s.fails(&[
        "label",
        "ns",
        "team",
        "--overwrite",
        "pod-security.kubernetes.io/enforce=strict",
    ]);
    assert!(
        msg.contains("Invalid value: \"strict\": must be one of privileged, baseline, restricted"),
        "{msg}"
    );
}

#[test]
fn pod_security_default_flag() {
    let s = Server::start_with(&["--pod-security-default", "baseline"]);
    let msg = s.fails(&["run", "p", "--image=busybox:skiff", "--privileged"]);
    assert!(
        msg.contains(
            "pods \"p\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"p\" must not set securityContext.privileged=true)"
        ),
        "{msg}"
    );
    s.ok(&["run", "q", "--image=busybox:skiff"]);
}
