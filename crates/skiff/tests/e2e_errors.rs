//! Bad input gets a Kubernetes Status with the right code and reason, and
//! the server keeps serving.

mod support;
use support::Server;

#[test]
fn bad_input_is_refused_with_a_status() {
    let s = Server::start();
    // Unknown field: kubectl validates strictly through the server.
    let err = s.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\nspec:\n  foo: 1\n",
    );
    assert!(!err.status.success());
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(msg.contains("unknown field \"spec\""), "{msg}");
    // Invalid name: 422 with the field cause.
    let err = s.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\n",
    );
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(!err.status.success());
    assert!(
        msg.contains("is invalid") && msg.contains("metadata.name"),
        "{msg}"
    );
    // Missing containers.
    let err = s.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec: {}\n",
    );
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        msg.contains("spec.containers") && msg.contains("Required value"),
        "{msg}"
    );
    // Unknown resource.
    let msg = s.fails(&["get", "frobnicators"]);
    assert!(
        msg.contains("the server doesn't have a resource type \"frobnicators\""),
        "{msg}"
    );
    // Not found.
    let msg = s.fails(&["get", "pod", "nope"]);
    assert!(msg.contains("pods \"nope\" not found"), "{msg}");
    // Already exists.
    s.ok(&["create", "configmap", "dup"]);
    let msg = s.fails(&["create", "configmap", "dup"]);
    assert!(msg.contains("configmaps \"dup\" already exists"), "{msg}");
    // Stale resourceVersion on replace: 409 Conflict.
    let cm = s.json(&["get", "configmap", "dup"]);
    s.ok(&["label", "configmap", "dup", "x=y"]);
    let stale = serde_json::to_string(&cm).unwrap_or_default();
    let out = s.kubectl_stdin(&["replace", "-f", "-"], &stale);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && msg.contains("the object has been modified"),
        "{msg}"
    );
    // Malformed JSON straight at the API: 400 BadRequest.
    let out = s.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/configmaps",
            "-f",
            "-",
        ],
        "{not json",
    );
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && (msg.contains("BadRequest")
                || msg.contains("400")
                || msg.contains("error decoding")),
        "{msg}"
    );
    // A body over 3 MiB: 413.
    let big = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"a\":\"{}\"}}}}",
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    let out = s.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/configmaps",
            "-f",
            "-",
        ],
        &big,
    );
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && (msg.contains("413") || msg.contains("too large")),
        "{msg}"
    );
    // Still serving, nothing lost.
    assert!(
        s.ok(&["get", "configmap", "dup", "-o", "name"])
            .contains("configmap/dup")
    );
}

#[test]
fn unauthenticated_requests_get_401() {
    let s = Server::start();
    let path = s.token_kubeconfig("wrong");
    let out = s.kubectl_full(
        "",
        &[
            "get",
            "pods",
            "--kubeconfig",
            path.to_str().unwrap_or_default(),
        ],
        None,
        &[],
    );
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && (msg.contains("Unauthorized") || msg.contains("provide credentials")),
        "{msg}"
    );
}
