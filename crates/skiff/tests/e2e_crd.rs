//! CustomResourceDefinitions end to end with the real kubectl: the
//! Kubernetes documentation's CronTab example, applied, listed with its
//! printer columns, explained (OpenAPI v3, and v2 for kubectl 1.27),
//! validated, patched, scaled, and deleted with its objects.

mod support;
use support::{Server, eventually, kubectl_bin};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                cronSpec:
                  type: string
                  description: The cron spec defining the interval a CronJob is run
                image:
                  type: string
                replicas:
                  type: integer
                  minimum: 1
                  maximum: 10
      subresources:
        scale:
          specReplicasPath: .spec.replicas
          statusReplicasPath: .status.replicas
      additionalPrinterColumns:
      - name: Spec
        type: string
        jsonPath: .spec.cronSpec
      - name: Replicas
        type: integer
        jsonPath: .spec.replicas
      - name: Age
        type: date
        jsonPath: .metadata.creationTimestamp
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames:
    - ct
"#;

const CRONTAB: &str = r#"
apiVersion: "stable.example.com/v1"
kind: CronTab
metadata:
  name: my-new-cron-object
spec:
  cronSpec: "* * * * */5"
  image: my-awesome-cron-image
  replicas: 1
"#;

#[test]
fn the_documentation_crontab_example_works_with_kubectl() {
    let s = Server::start();
    let out = s.ok_stdin(&["apply", "-f", "-"], CRD);
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com created"
        ),
        "{out}"
    );
    s.ok(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=30s",
        "crd/crontabs.stable.example.com",
    ]);
    let out = s.ok_stdin(&["apply", "-f", "-"], CRONTAB);
    assert!(
        out.contains("crontab.stable.example.com/my-new-cron-object created"),
        "{out}"
    );
    // Printer columns, short name, api-resources.
    let table = s.ok(&["get", "ct"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, vec!["NAME", "SPEC", "REPLICAS", "AGE"], "{table}");
    assert!(
        table.contains("my-new-cron-object   * * * * */5   1"),
        "{table}"
    );
    let resources = s.ok(&["api-resources", "--api-group=stable.example.com"]);
    assert!(
        resources.contains("crontabs") && resources.contains("CronTab"),
        "{resources}"
    );
    // explain from OpenAPI v3, and v2 for kubectl 1.27.
    let explained = s.ok(&["explain", "crontab.spec.cronSpec"]);
    assert!(
        explained.contains("The cron spec defining the interval a CronJob is run"),
        "{explained}"
    );
    let old = s.kubectl_version("1.27", &["explain", "crontab.spec.replicas"]);
    assert!(
        old.status.success(),
        "{} {}",
        kubectl_bin("1.27").display(),
        String::from_utf8_lossy(&old.stderr)
    );
    // The schema validates: unknown fields (kubectl asks for Strict) and bounds.
    let unknown = CRONTAB.replace("replicas: 1", "replicas: 1\n  bogus: 1");
    let refused = s.kubectl_stdin(
        &["create", "-f", "-"],
        &unknown.replace("my-new-cron-object", "b"),
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("strict decoding error: unknown field \"spec.bogus\""),
        "{err}"
    );
    let err = s.fails(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":11}}"#,
    ]);
    assert!(
        err.contains("spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"),
        "{err}"
    );
    // Client-side apply of a change (a merge patch: no patch strategies).
    s.ok_stdin(
        &["apply", "-f", "-"],
        &CRONTAB.replace("replicas: 1", "replicas: 3"),
    );
    let obj = s.json(&["get", "crontab", "my-new-cron-object"]);
    assert_eq!(obj["spec"]["replicas"], 3);
    assert_eq!(obj["metadata"]["generation"], 2);
    // kubectl scale goes through the scale subresource.
    let out = s.ok(&["scale", "crontab", "my-new-cron-object", "--replicas=4"]);
    assert!(
        out.contains("crontab.stable.example.com/my-new-cron-object scaled"),
        "{out}"
    );
    assert_eq!(
        s.json(&["get", "ct", "my-new-cron-object"])["spec"]["replicas"],
        4
    );
    // Deleting the definition deletes its objects.
    s.ok_stdin(&["delete", "-f", "-"], CRD);
    eventually("the definition is gone", &s, || {
        !s.kubectl(&["get", "crd", "crontabs.stable.example.com"])
            .status
            .success()
    });
    let after = s.kubectl(&[
        "get",
        "--raw",
        "/apis/stable.example.com/v1/namespaces/default/crontabs",
    ]);
    assert!(!after.status.success());
}
