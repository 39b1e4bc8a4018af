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
