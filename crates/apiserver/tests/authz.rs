//! Authorization against the in-process API server: RBAC decisions,
//! Kubernetes' 403 messages, impersonation, escalation prevention, the
//! Node authorizer and NodeRestriction, each through a real client.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use skiff_testsupport::{TestServer, eventually};

fn obj<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// The (code, message) of a refused request; panics if it succeeded.
fn refused<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(e)) => (e.code, e.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn create<T>(client: &kube::Client, ns: Option<&str>, v: Value) -> T
where
    T: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
    T::DynamicType: Default,
{
    let body: T = obj(v);
    let req = http::Request::post(T::url_path(&Default::default(), ns))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    client.request(req).await.unwrap()
}

/// A token for service account `ns/name`, created first, from the TokenRequest API.
async fn sa_token(s: &TestServer, ns: &str, name: &str) -> String {
    let _: ServiceAccount = create(&s.client, Some(ns), json!({"metadata": {"name": name}})).await;
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{ns}/serviceaccounts/{name}/token"
    ))
    .header("content-type", "application/json")
    .body(
        serde_json::to_vec(
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}),
        )
        .unwrap(),
    )
    .unwrap();
    let text = s.client.request_text(req).await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["status"]["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_service_account_holds_nothing_until_a_binding_grants_it() {
    let s = TestServer::start().await;
    s.namespace("team").await;
    let token = sa_token(&s, "team", "app").await;
    let app = s.client_with_token(&token).await;

    // Discovery and the self reviews are everyone's (system:discovery,
    // system:basic-user); Secrets are not.
    app.apiserver_version().await.unwrap();
    let (code, msg) = refused(
        Api::<Secret>::namespaced(app.clone(), "team")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "secrets is forbidden: User \"system:serviceaccount:team:app\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team\""
    );
    let (code, msg) = refused(
        Api::<Pod>::all(app.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "pods is forbidden: User \"system:serviceaccount:team:app\" cannot list resource \"pods\" in API group \"\" at the cluster scope"
    );
    let (code, msg) = refused(
        Api::<ConfigMap>::namespaced(app.clone(), "team")
            .get("x")
            .await,
    );
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "configmaps \"x\" is forbidden: User \"system:serviceaccount:team:app\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"team\""
    );

    // A Role with resourceNames and a RoleBinding to the service account's group.
    let _: Role = create(&s.client, Some("team"), json!({
        "metadata": {"name": "one-config"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["x"]},
                  {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}]})).await;
    let _: RoleBinding = create(&s.client, Some("team"), json!({
        "metadata": {"name": "team-sas"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccounts:team"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "one-config"}})).await;
    let _: ConfigMap = create(&s.client, Some("team"), json!({"metadata": {"name": "x"}})).await;
    let _: ConfigMap = create(&s.client, Some("team"), json!({"metadata": {"name": "y"}})).await;
    let cms = Api::<ConfigMap>::namespaced(app.clone(), "team");
    eventually("the binding to take effect", || async {
        cms.get("x").await.ok()
    })
    .await;
    let (code, _) = refused(cms.get("y").await);
    assert_eq!(code, 403, "resourceNames limit the grant");
    let (code, _) = refused(cms.list(&ListParams::default()).await);
    assert_eq!(code, 403, "a named grant does not allow list");
    Api::<Pod>::namespaced(app.clone(), "team")
        .list(&ListParams::default())
        .await
        .unwrap();
    let (code, _) = refused(
        Api::<Pod>::namespaced(app.clone(), "other")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403, "a RoleBinding grants in its own namespace only");
    let (code, msg) = refused(
        Api::<Pod>::namespaced(app.clone(), "team")
            .patch("p", &PatchParams::default(), &Patch::Merge(json!({})))
            .await,
    );
    assert_eq!(code, 403);
    assert!(msg.contains("cannot patch resource \"pods\""), "{msg}");

    // Removing the binding takes the grant away again.
    Api::<RoleBinding>::namespaced(s.client.clone(), "team")
        .delete("team-sas", &Default::default())
        .await
        .unwrap();
    eventually("the grant to go", || async {
        cms.get("x").await.is_err().then_some(())
    })
    .await;
}

#[tokio::test]
async fn cluster_roles_aggregate_and_bind_cluster_wide() {
    let s = TestServer::start().await;
    let _: ClusterRole = create(
        &s.client,
        None,
        json!({
        "metadata": {"name": "node-reader"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
                  {"nonResourceURLs": ["/metrics", "/logs/*"], "verbs": ["get"]}]}),
    )
    .await;
    let _: ClusterRoleBinding = create(&s.client, None, json!({
        "metadata": {"name": "alice-nodes"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-reader"}})).await;
    let alice = s.client_as("alice", &[]).await;
    let bob = s.client_as("bob", &["readers"]).await;
    eventually("the cluster binding", || async {
        Api::<Node>::all(alice.clone())
            .list(&ListParams::default())
            .await
            .ok()
    })
    .await;
    let get = |c: kube::Client, path: &'static str| async move {
        c.request_text(http::Request::get(path).body(Vec::new()).unwrap())
            .await
    };
    get(alice.clone(), "/metrics").await.unwrap();
    let (code, msg) = refused(get(bob.clone(), "/metrics").await);
    assert_eq!(code, 403);
    assert_eq!(msg, "forbidden: User \"bob\" cannot get path \"/metrics\"");
    let (code, msg) = refused(
        Api::<Node>::all(bob.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "nodes is forbidden: User \"bob\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
    );
    // A RoleBinding of a ClusterRole grants it in one namespace, to a group.
    s.namespace("ops").await;
    let _: RoleBinding = create(&s.client, Some("ops"), json!({
        "metadata": {"name": "readers-edit"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "readers"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cm-editor"}})).await;
    let _: ClusterRole = create(
        &s.client,
        None,
        json!({
        "metadata": {"name": "cm-editor"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]}),
    )
    .await;
    let cms = Api::<ConfigMap>::namespaced(bob.clone(), "ops");
    let cm: ConfigMap = obj(json!({"metadata": {"name": "c"}}));
    eventually("a role bound before it existed to apply", || async {
        cms.create(&PostParams::default(), &cm).await.ok()
    })
    .await;
    let (code, _) = refused(
        Api::<ConfigMap>::namespaced(bob.clone(), "default")
            .create(&PostParams::default(), &cm)
            .await,
    );
    assert_eq!(code, 403);
}

#[tokio::test]
async fn impersonation_needs_the_impersonate_verb() {
    let s = TestServer::start().await;
    // The admin (system:masters) may impersonate anyone; the impersonated
    // user then has only its own rights.
    let carol = s.client_as("carol", &["devs"]).await;
    let (code, msg) = refused(
        Api::<Secret>::namespaced(carol.clone(), "default")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403);
    assert!(msg.contains("User \"carol\" cannot list"), "{msg}");

    // Groups without a user are refused, as kube-apiserver refuses them.
    let req = http::Request::get("/api/v1/namespaces/default/configmaps")
        .header("Impersonate-Group", "devs")
        .body(Vec::new())
        .unwrap();
    let (code, msg) = refused(s.client.request_text(req).await);
    assert_eq!(code, 500, "{msg}");
    assert_eq!(
        msg,
        "Internal error occurred: requested impersonation of groups, extra or uid without a user"
    );

    // A user granted `impersonate` on one user name may become that user only.
    let _: ClusterRole = create(&s.client, None, json!({
        "metadata": {"name": "become-dave"},
        "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["dave"]}]})).await;
    let _: ClusterRoleBinding = create(&s.client, None, json!({
        "metadata": {"name": "carol-becomes-dave"},
        "subjects": [{"kind": "ServiceAccount", "name": "carol", "namespace": "default"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "become-dave"}})).await;
    let token = sa_token(&s, "default", "carol").await;
    let as_sa = |user: &'static str| {
        let s = &s;
        let token = token.clone();
        async move {
            let client = s.client_with_token(&token).await;
            let req = http::Request::get("/apis/authorization.k8s.io/v1")
                .header("Impersonate-User", user)
                .body(Vec::new())
                .unwrap();
            client.request_text(req).await
        }
    };
    eventually("the impersonate grant", || async {
        as_sa("dave").await.ok()
    })
    .await;
    let (code, msg) = refused(as_sa("erin").await);
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "users \"erin\" is forbidden: User \"system:serviceaccount:default:carol\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
}

#[tokio::test]
async fn nobody_grants_what_they_do_not_hold() {
    let s = TestServer::start().await;
    s.namespace("team").await;
    // mallory may manage Roles and RoleBindings in team, and read pods
    // (not `*`, which would include `escalate` and `bind`).
    let _: Role = create(&s.client, Some("team"), json!({
        "metadata": {"name": "rbac-manager"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["get", "list", "create", "update", "delete"]},
                  {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})).await;
    let _: RoleBinding = create(&s.client, Some("team"), json!({
        "metadata": {"name": "mallory"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rbac-manager"}})).await;
    let mallory = s.client_as("mallory", &[]).await;
    let roles = Api::<Role>::namespaced(mallory.clone(), "team");
    let held: Role = obj(json!({"metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}));
    eventually("mallory's grant", || async {
        roles.create(&PostParams::default(), &held).await.ok()
    })
    .await;
    let more: Role = obj(json!({"metadata": {"name": "secret-reader"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}));
    let (code, msg) = refused(roles.create(&PostParams::default(), &more).await);
    assert_eq!(code, 403);
    assert!(
        msg.starts_with("roles.rbac.authorization.k8s.io \"secret-reader\" is forbidden: user \"mallory\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:"),
        "{msg}"
    );
    assert!(
        msg.contains("{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}"),
        "{msg}"
    );
    // Binding a role she holds is fine; binding cluster-admin is not.
    let bindings = Api::<RoleBinding>::namespaced(mallory.clone(), "team");
    let ok: RoleBinding = obj(json!({"metadata": {"name": "friend"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "friend"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"}}));
    bindings.create(&PostParams::default(), &ok).await.unwrap();
    let admin: RoleBinding = obj(json!({"metadata": {"name": "me-admin"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}}));
    let (code, msg) = refused(bindings.create(&PostParams::default(), &admin).await);
    assert_eq!(code, 403, "{msg}");
    assert!(
        msg.contains("is attempting to grant RBAC permissions not currently held"),
        "{msg}"
    );
    // With `bind` on that role she may.
    let _: Role = create(&s.client, Some("team"), json!({
        "metadata": {"name": "binder"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["cluster-admin"]}]})).await;
    let _: RoleBinding = create(
        &s.client,
        Some("team"),
        json!({
        "metadata": {"name": "mallory-binds"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "binder"}}),
    )
    .await;
    eventually("the bind grant", || async {
        bindings.create(&PostParams::default(), &admin).await.ok()
    })
    .await;
}

#[tokio::test]
async fn nodes_reach_only_what_their_pods_use() {
    let s = TestServer::start().await;
    s.namespace("team").await;
    for name in ["n1", "n2"] {
        let _: Node = create(&s.client, None, json!({"metadata": {"name": name}})).await;
    }
    for name in ["used", "unused"] {
        let _: Secret = create(&s.client, Some("team"), json!({"metadata": {"name": name}})).await;
    }
    let _: ConfigMap = create(
        &s.client,
        Some("team"),
        json!({"metadata": {"name": "env"}}),
    )
    .await;
    let _: Pod = create(
        &s.client,
        Some("team"),
        json!({
        "metadata": {"name": "p1"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
                  "envFrom": [{"configMapRef": {"name": "env"}}]}],
                 "volumes": [{"name": "s", "secret": {"secretName": "used"}}]}}),
    )
    .await;
    let n1 = s.client_as("system:node:n1", &["system:nodes"]).await;
    let n2 = s.client_as("system:node:n2", &["system:nodes"]).await;
    let secrets = Api::<Secret>::namespaced(n1.clone(), "team");
    eventually("the node graph", || async {
        secrets.get("used").await.ok()
    })
    .await;
    Api::<ConfigMap>::namespaced(n1.clone(), "team")
        .get("env")
        .await
        .unwrap();
    let (code, msg) = refused(secrets.get("unused").await);
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "secrets \"unused\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"team\": no relationship found between node 'n1' and this object"
    );
    let (code, _) = refused(
        Api::<Secret>::namespaced(n2.clone(), "team")
            .get("used")
            .await,
    );
    assert_eq!(code, 403, "another node's pod's secret");
    let (code, _) = refused(secrets.list(&ListParams::default()).await);
    assert_eq!(code, 403, "nodes may not list secrets");
    // system:node (RBAC) lets nodes read pods and nodes.
    Api::<Pod>::all(n1.clone())
        .list(&ListParams::default())
        .await
        .unwrap();

    // NodeRestriction: a node changes only its own Node and Lease.
    let status =
        Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}));
    Api::<Node>::all(n1.clone())
        .patch_status("n1", &PatchParams::default(), &status)
        .await
        .unwrap();
    let (code, msg) = refused(
        Api::<Node>::all(n1.clone())
            .patch_status("n2", &PatchParams::default(), &status)
            .await,
    );
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
    );
    let leases = Api::<Lease>::namespaced(n1.clone(), "kube-node-lease");
    leases
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}})),
        )
        .await
        .unwrap();
    let (code, _) = refused(
        leases
            .create(
                &PostParams::default(),
                &obj(json!({"metadata": {"name": "n2"}, "spec": {"holderIdentity": "n2"}})),
            )
            .await,
    );
    assert_eq!(code, 403);
    // A node may create only mirror pods bound to itself.
    let pods = Api::<Pod>::namespaced(n1.clone(), "team");
    let plain: Pod = obj(json!({"metadata": {"name": "p2"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}));
    let (code, msg) = refused(pods.create(&PostParams::default(), &plain).await);
    assert_eq!(code, 403);
    assert!(msg.contains("can only create mirror pods"), "{msg}");
    // Deleting another node's pod is refused; its own is allowed.
    let (code, _) = refused(
        Api::<Pod>::namespaced(n2.clone(), "team")
            .delete("p1", &Default::default())
            .await,
    );
    assert_eq!(code, 403);
    pods.delete("p1", &Default::default()).await.unwrap();
}

fn csr_request(cn: &str, org: Option<&str>) -> String {
    use base64::Engine;
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
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    base64::engine::general_purpose::STANDARD.encode(pem)
}

/// The Certificates API as the conformance test drives it, and the
/// approval and signing permissions on top.
#[tokio::test]
async fn certificate_signing_requests_and_who_may_approve_them() {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest as Csr;
    let s = TestServer::start().await;
    let csrs: Api<Csr> = Api::all(s.client.clone());
    let template = json!({"metadata": {"generateName": "e2e-"}, "spec": {
        "request": csr_request("e2e.example.com", None), "signerName": "example.com/e2e",
        "usages": ["digital signature", "key encipherment", "server auth"], "expirationSeconds": 3600}});
    let created = csrs
        .create(&PostParams::default(), &obj(template.clone()))
        .await
        .unwrap();
    let name = created.metadata.name.clone().unwrap();
    let spec = &created.spec;
    assert_eq!(
        spec.username.as_deref(),
        Some("system:admin"),
        "the requester is stamped"
    );
    assert!(
        spec.groups
            .as_ref()
            .unwrap()
            .contains(&"system:masters".to_string())
    );
    assert_eq!(spec.expiration_seconds, Some(3600));
    let listed = csrs
        .list(&ListParams::default().fields("spec.signerName=example.com/e2e"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    // /approval takes conditions, the main resource does not.
    let patched = csrs
        .patch_approval(&name, &PatchParams::default(), &Patch::Merge(json!({
            "metadata": {"annotations": {"patchedapproval": "true"}},
            "status": {"conditions": [{"type": "ApprovalPatch", "status": "True", "reason": "e2e"}]}})))
        .await
        .unwrap();
    let conds = patched.status.as_ref().unwrap().conditions.clone().unwrap();
    assert_eq!(conds.len(), 1);
    assert_eq!(conds[0].type_, "ApprovalPatch");
    assert!(
        conds[0].last_update_time.is_some(),
        "timestamps are the server's"
    );
    let same = csrs
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({
            "status": {"conditions": [{"type": "Sneaky", "status": "True"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        same.status.unwrap().conditions.unwrap()[0].type_,
        "ApprovalPatch"
    );
    // A certificate through /status.
    let cert = {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec!["e2e.example.com".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem()
    };
    let cert_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&cert)
    };
    let with_cert = csrs
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({
            "status": {"certificate": cert_b64}})),
        )
        .await
        .unwrap();
    assert_eq!(
        with_cert.status.unwrap().certificate.unwrap().0,
        cert.as_bytes()
    );
    // Bad requests are refused with their field.
    let mut bad = template.clone();
    bad["spec"]["request"] = json!("bm90IGEgcmVxdWVzdA==");
    let (code, msg) = refused(csrs.create(&PostParams::default(), &obj(bad)).await);
    assert_eq!(code, 422);
    assert!(msg.contains("spec.request"), "{msg}");
    // system:masters through the plain client signer is refused.
    let mut masters = template.clone();
    masters["spec"]["signerName"] = json!("kubernetes.io/kube-apiserver-client");
    masters["spec"]["usages"] = json!(["client auth"]);
    masters["spec"]["request"] = json!(csr_request("mallory", Some("system:masters")));
    let (code, msg) = refused(csrs.create(&PostParams::default(), &obj(masters)).await);
    assert_eq!(code, 403);
    assert!(msg.ends_with("use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"), "{msg}");

    // Updating /approval is not approving: that needs `approve` on the signer.
    let _: ClusterRole = create(&s.client, None, json!({
        "metadata": {"name": "csr-updater"},
        "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests", "certificatesigningrequests/approval"], "verbs": ["get", "update", "patch"]}]})).await;
    let _: ClusterRoleBinding = create(&s.client, None, json!({
        "metadata": {"name": "ops-csr"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "ops"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "csr-updater"}})).await;
    let ops: Api<Csr> = Api::all(s.client_as("ops", &[]).await);
    let approve = Patch::Merge(json!({"status": {"conditions": [
        {"type": "ApprovalPatch", "status": "True", "reason": "e2e"},
        {"type": "Approved", "status": "True", "reason": "ops"}]}}));
    let (code, msg) = eventually("ops's grant", || async {
        match ops
            .patch_approval(&name, &PatchParams::default(), &approve)
            .await
        {
            Err(kube::Error::Api(e)) if e.message.contains("not permitted to approve") => {
                Some((e.code, e.message))
            }
            _ => None,
        }
    })
    .await;
    assert_eq!(code, 403);
    assert!(
        msg.ends_with("user not permitted to approve requests with signerName \"example.com/e2e\""),
        "{msg}"
    );
    let _: ClusterRole = create(&s.client, None, json!({
        "metadata": {"name": "e2e-approver"},
        "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "verbs": ["approve"], "resourceNames": ["example.com/*"]}]})).await;
    let _: ClusterRoleBinding = create(&s.client, None, json!({
        "metadata": {"name": "ops-approves"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "ops"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "e2e-approver"}})).await;
    let approved = eventually("the approve grant", || async {
        ops.patch_approval(&name, &PatchParams::default(), &approve)
            .await
            .ok()
    })
    .await;
    assert!(
        approved
            .status
            .unwrap()
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Approved")
    );
    csrs.delete(&name, &Default::default()).await.unwrap();
}
