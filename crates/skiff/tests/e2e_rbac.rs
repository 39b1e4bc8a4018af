//! Authorization with the real kubectl: a service account's token holds
//! nothing until a binding grants it; `view` cannot read Secrets and `edit`
//! can (the aggregated bootstrap roles); `kubectl auth can-i --list --as`
//! tells what the server enforces; `kubectl --as` is the admin's, not
//! everyone's; the components run as their own users.

mod support;
use support::{Server, eventually};

/// `kubectl auth whoami` with `kubeconfig`, printed by `jsonpath`.
fn whoami(s: &Server, kubeconfig: &str, jsonpath: &str) -> String {
    s.ok(&[
        "auth",
        "whoami",
        "--kubeconfig",
        kubeconfig,
        "-o",
        &format!("jsonpath={jsonpath}"),
    ])
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn service_account_tokens_get_what_bindings_grant() {
    let s = Server::start();
    s.ok(&["create", "namespace", "team"]);
    s.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "-n",
        "team",
        "--from-literal=password=x",
    ]);
    eventually("the default service account", &s, || {
        s.kubectl(&["get", "serviceaccount", "default", "-n", "team"])
            .status
            .success()
    });
    // The identity of the team namespace's pods' default token.
    let token = s.ok(&["create", "token", "default", "-n", "team"]);
    let kc = s.token_kubeconfig(token.trim());
    let kc = kc.to_str().unwrap_or_default();
    let as_pod = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-n", "team", "--kubeconfig", kc]);
        s.kubectl(&all)
    };
    let out = as_pod(&["get", "secrets"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "Error from server (Forbidden): secrets is forbidden: User \"system:serviceaccount:team:default\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team\""
        ),
        "{}",
        stderr(&out)
    );
    assert!(!as_pod(&["get", "pods"]).status.success(), "no grant yet");

    // view: pods yes, secrets no.
    s.ok(&[
        "create",
        "rolebinding",
        "pods-view",
        "-n",
        "team",
        "--clusterrole=view",
        "--serviceaccount=team:default",
    ]);
    eventually("view to take effect", &s, || {
        as_pod(&["get", "pods"]).status.success()
    });
    let out = as_pod(&["get", "secret", "db"]);
    assert!(!out.status.success(), "view reads secrets");
    assert!(
        stderr(&out).contains("cannot get resource \"secrets\""),
        "{}",
        stderr(&out)
    );
    // can-i as the admin asking for the account agrees with enforcement.
    let as_sa = "--as=system:serviceaccount:team:default";
    assert_eq!(
        s.kubectl(&["auth", "can-i", "list", "pods", "-n", "team", as_sa])
            .status
            .code(),
        Some(0)
    );
    let out = s.kubectl(&["auth", "can-i", "get", "secrets", "-n", "team", as_sa]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    let list = s.ok(&["auth", "can-i", "--list", "-n", "team", as_sa]);
    let line = |resource: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(resource))
            .map(str::to_string)
    };
    assert!(
        line("pods").is_some_and(|l| l.contains("get")
            && l.contains("list")
            && l.contains("watch")
            && !l.contains("create")),
        "{list}"
    );
    assert!(line("secrets").is_none(), "{list}");
    assert!(
        line("selfsubjectaccessreviews.authorization.k8s.io").is_some(),
        "{list}"
    );

    // edit: secrets yes, and writes.
    s.ok(&[
        "create",
        "rolebinding",
        "team-edit",
        "-n",
        "team",
        "--clusterrole=edit",
        "--serviceaccount=team:default",
    ]);
    eventually("edit to take effect", &s, || {
        as_pod(&["get", "secret", "db"]).status.success()
    });
    assert!(
        as_pod(&["create", "configmap", "c", "--from-literal=a=b"])
            .status
            .success()
    );
    // Still nothing outside the namespace, and no RBAC of its own.
    let out = s.kubectl(&["get", "secrets", "-n", "default", "--kubeconfig", kc]);
    assert!(!out.status.success());
    let out = as_pod(&[
        "create",
        "rolebinding",
        "me-admin",
        "--clusterrole=cluster-admin",
        "--serviceaccount=team:default",
    ]);
    assert!(!out.status.success(), "edit may not grant itself admin");
}

#[test]
fn impersonation_is_the_admins_not_everyones() {
    let s = Server::start();
    let who = s.ok(&["auth", "whoami", "--as=jane", "--as-group=devs"]);
    assert!(who.contains("jane") && who.contains("devs"), "{who}");
    let out = s.kubectl(&["get", "pods", "--as=jane"]);
    assert!(
        stderr(&out).contains("pods is forbidden: User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{}",
        stderr(&out)
    );
    s.ok(&["create", "serviceaccount", "bot"]);
    let token = s.ok(&["create", "token", "bot"]);
    let kc = s.token_kubeconfig(token.trim());
    let out = s.kubectl(&[
        "get",
        "pods",
        "--as=system:admin",
        "--kubeconfig",
        kc.to_str().unwrap_or_default(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("users \"system:admin\" is forbidden: User \"system:serviceaccount:default:bot\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{}",
        stderr(&out)
    );
    // The components are users of their own, with their bootstrap roles.
    for (user, verb, resource, allowed) in [
        (
            "system:kube-scheduler",
            "create",
            "pods --subresource=binding",
            "yes",
        ),
        ("system:kube-scheduler", "get", "secrets", "no"),
        (
            "system:kube-proxy",
            "list",
            "endpointslices.discovery.k8s.io",
            "yes",
        ),
        ("system:kube-proxy", "list", "secrets", "no"),
        (
            "system:kube-controller-manager",
            "create",
            "replicasets.apps",
            "yes",
        ),
    ] {
        let as_user = format!("--as={user}");
        let mut args = vec!["auth", "can-i", verb];
        args.extend(resource.split(' '));
        args.extend(["-A", &as_user]);
        let out = s.kubectl(&args);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            allowed,
            "{user} {verb} {resource}"
        );
    }
}

#[test]
fn an_agent_refuses_a_server_whose_ca_its_token_does_not_pin() {
    let s = Server::start();
    let token = std::fs::read_to_string(s.data_dir().join("node-token")).expect("node-token");
    let token = token.trim();
    assert!(token.starts_with("K10"), "{token}");
    // The same secret, another CA hash: as if a man in the middle answered.
    let secret = token.split_once("::").map(|(_, s)| s).unwrap_or_default();
    let forged = format!("K10{}::{secret}", "0".repeat(64));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "agent",
            "--server",
            &format!("https://127.0.0.1:{}", s.port),
            "--token",
            &forged,
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("skiff agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "token CA hash does not match the Cluster CA certificate hash: {} != ",
            "0".repeat(64)
        )),
        "{err}"
    );
    // Nothing was sent with the token: the server saw no request for a certificate.
    let csrs = s.ok(&["get", "csr", "-o", "name"]);
    assert!(csrs.trim().is_empty(), "{csrs}");
}

#[test]
fn an_agent_token_joins_agents_and_is_not_the_cluster_token() {
    let s = Server::start_with(&["--token", "cluster-secret", "--agent-token", "agent-secret"]);
    let read = |f: &str| {
        std::fs::read_to_string(s.data_dir().join(f))
            .expect(f)
            .trim()
            .to_string()
    };
    // Both files keep their token pinned to the CA (k3s's K10 form).
    let (node_token, agent_token) = (read("node-token"), read("agent-token"));
    let hash = node_token
        .strip_prefix("K10")
        .and_then(|t| t.split_once("::"))
        .map(|(h, _)| h.to_string())
        .unwrap_or_default();
    assert_eq!(hash.len(), 64, "{node_token}");
    assert_eq!(node_token, format!("K10{hash}::server:cluster-secret"));
    assert_eq!(agent_token, format!("K10{hash}::node:agent-secret"));
    // The agent token, in either form, is the bootstrap identity: it may
    // ask for certificates and nothing else.
    for token in [agent_token.as_str(), "agent-secret"] {
        let kc = s.token_kubeconfig(token);
        let kc = kc.to_str().unwrap_or_default();
        let who = whoami(
            &s,
            kc,
            "{.status.userInfo.username} {.status.userInfo.groups}",
        );
        assert!(
            who.starts_with("system:node-token ") && who.contains("system:bootstrappers"),
            "{who}"
        );
        let out = s.kubectl(&["get", "secrets", "-A", "--kubeconfig", kc]);
        assert!(
            stderr(&out).contains("User \"system:node-token\" cannot list resource \"secrets\""),
            "{}",
            stderr(&out)
        );
        let out = s.kubectl(&[
            "auth",
            "can-i",
            "create",
            "certificatesigningrequests",
            "--kubeconfig",
            kc,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

#[test]
fn a_token_secret_made_by_hand_holds_a_token_valid_while_the_secret_lives() {
    let s = Server::start();
    s.ok(&["create", "namespace", "legacy"]);
    s.ok(&["create", "serviceaccount", "robot", "-n", "legacy"]);
    let secret = |name: &str, account: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: legacy\n  annotations:\n    kubernetes.io/service-account.name: {account}\ntype: kubernetes.io/service-account-token\n"
        )
    };
    s.ok_stdin(&["apply", "-f", "-"], &secret("robot-token", "robot"));
    let field = |jsonpath: &str| {
        s.ok(&[
            "get",
            "secret",
            "robot-token",
            "-n",
            "legacy",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])
    };
    // The tokens controller fills in the token, the CA and the namespace.
    let mut token = String::new();
    eventually("the token Secret filled in", &s, || {
        token = field("{.data.token}");
        !token.trim().is_empty()
    });
    let decode = |b64: &str| {
        use base64::Engine as _;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .expect("base64"),
        )
        .expect("utf-8")
    };
    let token = decode(&token);
    let ns = field("{.data.namespace}");
    assert_eq!(decode(&ns), "legacy");
    let ca = field("{.data.ca\\.crt}");
    let server_ca = std::fs::read_to_string(s.data_dir().join("tls/server-ca.crt")).expect("CA");
    assert_eq!(decode(&ca), server_ca);
    let uid = s.ok(&[
        "get",
        "serviceaccount",
        "robot",
        "-n",
        "legacy",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let annotated = field("{.metadata.annotations.kubernetes\\.io/service-account\\.uid}");
    assert_eq!(annotated, uid);
    // The token is the account's, with the account's (empty) rights.
    let kc = s.token_kubeconfig(&token);
    let kc = kc.to_str().unwrap_or_default();
    let who = whoami(&s, kc, "{.status.userInfo.username}");
    assert_eq!(who, "system:serviceaccount:legacy:robot");
    let out = s.kubectl(&["get", "pods", "-n", "legacy", "--kubeconfig", kc]);
    assert!(
        stderr(&out).contains("cannot list resource \"pods\""),
        "{}",
        stderr(&out)
    );
    // Once the Secret is gone, so is the token (kubectl's words for a 401).
    s.ok(&["delete", "secret", "robot-token", "-n", "legacy"]);
    eventually("the token refused", &s, || {
        let out = s.kubectl(&["auth", "whoami", "--kubeconfig", kc]);
        stderr(&out).contains("You must be logged in to the server (Unauthorized)")
    });
    // A token Secret for an account that does not exist is deleted.
    s.ok_stdin(&["apply", "-f", "-"], &secret("ghost-token", "ghost"));
    eventually("the ghost's token Secret deleted", &s, || {
        let out = s.kubectl(&["get", "secret", "ghost-token", "-n", "legacy"]);
        stderr(&out).contains("NotFound") || stderr(&out).contains("not found")
    });
}

#[test]
fn the_kubelet_api_authorizes_callers_by_certificate() {
    let Some(s) = support::node_ready("the kubelet API authorization test") else {
        return;
    };
    let node = s.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let ip = s.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    let port = s.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    let kubelet = format!("--server=https://{ip}:{port}");
    let direct = |kubeconfig: &str| {
        s.kubectl(&[
            "get",
            "--raw",
            "/pods",
            &kubelet,
            "--insecure-skip-tls-verify",
            "--kubeconfig",
            kubeconfig,
        ])
    };
    // The join token opens nothing on the kubelet.
    let token = std::fs::read_to_string(s.data_dir().join("node-token")).expect("node-token");
    let kc = s.token_kubeconfig(token.trim());
    let out = direct(kc.to_str().unwrap_or_default());
    // (kubectl's words for a 401)
    assert!(
        !out.status.success()
            && stderr(&out).contains("the server has asked for the client to provide credentials"),
        "{}",
        stderr(&out)
    );
    // A certificate of the cluster is authorized by SubjectAccessReview:
    // the admin's may, the DNS component's may not.
    let admin = s.kubeconfig();
    let out = direct(admin.to_str().unwrap_or_default());
    assert!(out.status.success(), "{}", stderr(&out));
    // The kubelet serves a certificate of the cluster CA for its address
    // (kubectl verifies it with the admin kubeconfig's CA), which it asked
    // for as its node through the CSR API.
    eventually("the kubelet's serving certificate", &s, || {
        s.kubectl(&[
            "get",
            "--raw",
            "/pods",
            &kubelet,
            "--kubeconfig",
            admin.to_str().unwrap_or_default(),
        ])
        .status
        .success()
    });
    let serving = s.ok(&[
        "get",
        "csr",
        "--field-selector",
        "spec.signerName=kubernetes.io/kubelet-serving",
        "-o",
        "jsonpath={range .items[*]}{.spec.username} {.status.conditions[0].type}{\"\\n\"}{end}",
    ]);
    assert!(
        serving.contains(&format!("system:node:{node} Approved")),
        "{serving}"
    );
    let dns = s.data_dir().join("cred/skiff-dns.kubeconfig");
    let out = direct(dns.to_str().unwrap_or_default());
    assert!(
        stderr(&out).contains(
            "Forbidden (user=system:skiff-dns, verb=get, resource=nodes, subresource=proxy)"
        ),
        "{}",
        stderr(&out)
    );
    // Through the API server, nodes/proxy is an RBAC permission of its own.
    let path = format!("/api/v1/nodes/{node}/proxy/pods");
    let out = s.kubectl(&["get", "--raw", &path, "--as=jane"]);
    assert!(
        stderr(&out).contains(&format!(
            "nodes \"{node}\" is forbidden: User \"jane\" cannot get resource \"nodes/proxy\" in API group \"\" at the cluster scope"
        )),
        "{}",
        stderr(&out)
    );
    s.ok(&[
        "create",
        "clusterrolebinding",
        "jane-kubelet",
        "--clusterrole=system:kubelet-api-admin",
        "--user=jane",
    ]);
    eventually("jane's grant", &s, || {
        s.kubectl(&["get", "--raw", &path, "--as=jane"])
            .status
            .success()
    });
}

#[test]
fn kubeconfigs_for_new_users_carry_their_certificate() {
    let s = Server::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "kubeconfig",
            "create",
            "dana",
            "--group",
            "auditors",
            "--data-dir",
        ])
        .arg(s.data_dir())
        .output()
        .expect("skiff kubeconfig create");
    assert!(out.status.success(), "{}", stderr(&out));
    let kc = s.data_dir().join("dana.kubeconfig");
    std::fs::write(&kc, &out.stdout).expect("write");
    let kc = kc.to_str().unwrap_or_default();
    let who = s.ok(&["auth", "whoami", "--kubeconfig", kc]);
    assert!(who.contains("dana") && who.contains("auditors"), "{who}");
    let out = s.kubectl(&["get", "pods", "--kubeconfig", kc]);
    assert!(
        stderr(&out).contains("User \"dana\" cannot list resource \"pods\""),
        "{}",
        stderr(&out)
    );
    s.ok(&[
        "create",
        "clusterrolebinding",
        "auditors-view",
        "--clusterrole=view",
        "--group=auditors",
    ]);
    eventually("the group's binding", &s, || {
        s.kubectl(&["get", "pods", "--kubeconfig", kc])
            .status
            .success()
    });
}
