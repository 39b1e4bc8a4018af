//! Older and newer kubectl releases (1.27 and 1.33) work too.

mod support;
use support::Server;

fn smoke(version: &str) {
    let s = Server::start();
    let run = |args: &[&str]| {
        let out = s.kubectl_version(version, args);
        assert!(
            out.status.success(),
            "kubectl {version} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run(&[
        "apply",
        "-f",
        &support::scenario("web-deployment-service.yaml"),
    ]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(run(&["get", "deploy", "web"]).contains("web"));
    assert!(run(&["get", "svc", "-o", "wide"]).contains("kubernetes"));
    assert!(run(&["describe", "deploy", "web"]).contains("Replicas:"));
    run(&["scale", "deploy", "web", "--replicas=3"]);
    run(&[
        "delete",
        "-f",
        &support::scenario("web-deployment-service.yaml"),
    ]);
}

#[test]
fn kubectl_1_27() {
    smoke("1.27");
}

#[test]
fn kubectl_1_33() {
    smoke("1.33");
}
