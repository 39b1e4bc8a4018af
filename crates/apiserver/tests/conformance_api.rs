//! API behaviours the Kubernetes conformance suite relies on, checked the
//! way client-go exercises them: field selectors computed with defaults,
//! DeleteOptions in protobuf, ...

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use skiff_testsupport::TestServer;

/// A protobuf varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A length-delimited protobuf field.
fn bytes_field(tag: u64, data: &[u8], out: &mut Vec<u8>) {
    varint(tag << 3 | 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// `k8s\0` + runtime.Unknown{typeMeta{apiVersion, kind}, raw}, as client-go
/// encodes a body in protobuf.
fn k8s_protobuf(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::new();
    bytes_field(1, api_version.as_bytes(), &mut type_meta);
    bytes_field(2, kind.as_bytes(), &mut type_meta);
    let mut out = b"k8s\0".to_vec();
    bytes_field(1, &type_meta, &mut out);
    bytes_field(2, raw, &mut out);
    out
}

#[tokio::test]
async fn schedulable_nodes_match_spec_unschedulable_false() {
    let s = TestServer::start().await;
    let nodes: Api<Node> = Api::all(s.client.clone());
    for (name, spec) in [
        ("plain", json!({})),
        ("cordoned", json!({"unschedulable": true})),
    ] {
        let n: Node =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
        nodes.create(&PostParams::default(), &n).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<Node>| -> Vec<String> {
        l.items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect()
    };
    let schedulable = nodes
        .list(&ListParams::default().fields("spec.unschedulable=false"))
        .await
        .unwrap();
    assert_eq!(names(schedulable), vec!["plain".to_string()]);
    let cordoned = nodes
        .list(&ListParams::default().fields("spec.unschedulable=true"))
        .await
        .unwrap();
    assert_eq!(names(cordoned), vec!["cordoned".to_string()]);
    // Nodes have no metadata.namespace field: Kubernetes refuses it.
    let err = nodes
        .list(&ListParams::default().fields("metadata.namespace=default"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 400);
            assert_eq!(e.message, "field label not supported: metadata.namespace");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn delete_options_in_protobuf_are_honoured() {
    let s = TestServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "pb"}})).unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();

    // DeleteOptions{preconditions{uid: <wrong>}}: field 2 is Preconditions, its field 1 the uid.
    let mut pre = Vec::new();
    bytes_field(1, b"not-the-uid", &mut pre);
    let mut raw = Vec::new();
    bytes_field(2, &pre, &mut raw);
    let body = k8s_protobuf("v1", "DeleteOptions", &raw);
    let req = http::Request::delete("/api/v1/namespaces/default/configmaps/pb")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(body)
        .unwrap();
    let err = s.client.request_text(req).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 409 && e.message.contains("Precondition failed: UID")),
        "{err:?}"
    );
    assert!(cms.get_opt("pb").await.unwrap().is_some());

    // dryRun: ["All"] (field 5) keeps the object.
    let mut raw = Vec::new();
    bytes_field(5, b"All", &mut raw);
    let req = http::Request::delete("/api/v1/namespaces/default/configmaps/pb")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(k8s_protobuf("v1", "DeleteOptions", &raw))
        .unwrap();
    s.client.request_text(req).await.unwrap();
    assert!(cms.get_opt("pb").await.unwrap().is_some());

    // The right uid and propagationPolicy Background (field 4) delete it.
    let mut pre = Vec::new();
    bytes_field(1, uid.as_bytes(), &mut pre);
    let mut raw = Vec::new();
    bytes_field(2, &pre, &mut raw);
    bytes_field(4, b"Background", &mut raw);
    let req = http::Request::delete("/api/v1/namespaces/default/configmaps/pb")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(k8s_protobuf("v1", "DeleteOptions", &raw))
        .unwrap();
    s.client.request_text(req).await.unwrap();
    assert!(cms.get_opt("pb").await.unwrap().is_none());
}

#[tokio::test]
async fn bad_delete_options_are_refused_as_kubernetes_refuses_them() {
    let s = TestServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "keep"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    for (body, field) in [
        (
            json!({"propagationPolicy": "Sideways"}),
            "propagationPolicy",
        ),
        (
            json!({"propagationPolicy": "Orphan", "orphanDependents": true}),
            "propagationPolicy",
        ),
        (json!({"dryRun": ["Some"]}), "dryRun"),
    ] {
        let req = http::Request::delete("/api/v1/namespaces/default/configmaps/keep")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        match s.client.request_text(req).await.unwrap_err() {
            kube::Error::Api(e) => {
                assert_eq!(
                    (e.code, e.reason.as_str()),
                    (422, "Invalid"),
                    "{body}: {e:?}"
                );
                assert!(e.message.contains(field), "{e:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // A body that is not a DeleteOptions in any encoding: 400, not a 500.
    let req = http::Request::delete("/api/v1/namespaces/default/configmaps/keep")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(b"not protobuf".to_vec())
        .unwrap();
    match s.client.request_text(req).await.unwrap_err() {
        kube::Error::Api(e) => assert_eq!(e.code, 400, "{e:?}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(cms.get_opt("keep").await.unwrap().is_some());
}

#[tokio::test]
async fn evictions_use_their_delete_options() {
    let s = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "ev"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "ev"},
        "deleteOptions": {"gracePeriodSeconds": 7}});
    let req = http::Request::post("/api/v1/namespaces/default/pods/ev/eviction")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&eviction).unwrap())
        .unwrap();
    s.client.request_text(req).await.unwrap();
    let p = pods.get("ev").await.unwrap();
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(7));
}

#[tokio::test]
async fn runtime_classes_admit_pods_with_their_overhead_and_scheduling() {
    use k8s_openapi::api::node::v1::RuntimeClass;
    let s = TestServer::start().await;
    // Discovery lists node.k8s.io/v1 runtimeclasses.
    let resources = s
        .client
        .list_api_group_resources("node.k8s.io/v1")
        .await
        .unwrap();
    assert!(
        resources
            .resources
            .iter()
            .any(|r| r.name == "runtimeclasses")
    );

    let rcs: Api<RuntimeClass> = Api::all(s.client.clone());
    let rc: RuntimeClass = serde_json::from_value(json!({
        "metadata": {"name": "fast"}, "handler": "runc",
        "overhead": {"podFixed": {"cpu": "10m", "memory": "1Mi"}},
        "scheduling": {"nodeSelector": {"disk": "ssd"},
                       "tolerations": [{"key": "fast", "operator": "Exists", "effect": "NoSchedule"}]}
    }))
    .unwrap();
    rcs.create(&PostParams::default(), &rc).await.unwrap();
    // The cache serves admission: wait until it has the class.
    skiff_testsupport::eventually("the RuntimeClass in the cache", || async {
        rcs.get_opt("fast").await.ok().flatten()
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let pod = |name: &str, class: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"runtimeClassName": class, "containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap()
    };
    let created = pods
        .create(&PostParams::default(), &pod("with-class", "fast"))
        .await
        .unwrap();
    let spec = created.spec.unwrap();
    let overhead = spec.overhead.unwrap();
    assert_eq!(overhead["cpu"].0, "10m");
    assert_eq!(overhead["memory"].0, "1Mi");
    assert_eq!(spec.node_selector.unwrap()["disk"], "ssd");
    assert!(
        spec.tolerations
            .unwrap()
            .iter()
            .any(|t| t.key.as_deref() == Some("fast"))
    );

    let err = pods
        .create(&PostParams::default(), &pod("missing-class", "nonexistent"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
            assert!(
                e.message
                    .contains("pod rejected: RuntimeClass \"nonexistent\" not found"),
                "{}",
                e.message
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // A pod whose overhead disagrees with its class is refused.
    let mut mismatched = pod("mismatched", "fast");
    mismatched.spec.as_mut().unwrap().overhead = Some(
        [(
            "cpu".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
        )]
        .into(),
    );
    let err = pods
        .create(&PostParams::default(), &mismatched)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 403),
        "{err:?}"
    );
}

#[tokio::test]
async fn csi_storage_capacities_are_served() {
    use k8s_openapi::api::storage::v1::CSIStorageCapacity;
    let s = TestServer::start().await;
    let caps: Api<CSIStorageCapacity> = Api::namespaced(s.client.clone(), "default");
    let cap: CSIStorageCapacity = serde_json::from_value(json!({
        "metadata": {"name": "cap", "labels": {"test": "x"}}, "storageClassName": "local",
        "capacity": "1Gi"
    }))
    .unwrap();
    caps.create(&PostParams::default(), &cap).await.unwrap();
    let listed = caps
        .list(&ListParams::default().labels("test=x"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let all: Api<CSIStorageCapacity> = Api::all(s.client.clone());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
}

#[tokio::test]
async fn pods_get_their_priority_class_or_are_refused() {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let s = TestServer::start().await;
    let pcs: Api<PriorityClass> = Api::all(s.client.clone());
    let pc: PriorityClass = serde_json::from_value(
        json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"}),
    )
    .unwrap();
    pcs.create(&PostParams::default(), &pc).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let pod = |name: &str, class: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"priorityClassName": class, "containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap()
    };
    let p = pods
        .create(&PostParams::default(), &pod("hi", "high"))
        .await
        .unwrap();
    let spec = p.spec.unwrap();
    assert_eq!(spec.priority, Some(1000));
    assert_eq!(spec.preemption_policy.as_deref(), Some("Never"));
    let err = pods
        .create(&PostParams::default(), &pod("nope", "missing"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 403 && e.message.contains("no PriorityClass with name missing was found")),
        "{err:?}"
    );
}

/// POSTs a JSON body and returns (status code, response body).
async fn post_json(
    s: &TestServer,
    path: &str,
    accept: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut req = http::Request::post(path).header("content-type", "application/json");
    if !accept.is_empty() {
        req = req.header("accept", accept);
    }
    let req = req.body(serde_json::to_vec(&body).unwrap()).unwrap();
    match s.client.request_text(req).await {
        Ok(text) => (201, serde_json::from_str(&text).unwrap()),
        Err(kube::Error::Api(e)) => (e.code, json!({"reason": e.reason, "message": e.message})),
        Err(e) => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn access_reviews_answer_and_validate() {
    let s = TestServer::start().await;
    s.namespace("team").await;
    let spec = json!({"resourceAttributes": {"verb": "list", "resource": "configmaps", "namespace": "team", "version": "v1"},
        "user": "system:serviceaccount:team:e2e", "groups": ["system:authenticated"]});
    let (code, sar) = post_json(&s, "/apis/authorization.k8s.io/v1/subjectaccessreviews", "",
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec})).await;
    assert_eq!(code, 201, "{sar}");
    assert_eq!(sar["kind"], "SubjectAccessReview");
    // Truthful: a service account holds nothing until a binding grants it.
    assert_eq!(sar["status"]["allowed"], false, "{sar}");
    assert_eq!(sar["spec"]["user"], "system:serviceaccount:team:e2e");
    let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
        "metadata": {"name": "cm-reader", "namespace": "team"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]}))
    .unwrap();
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "e2e-reads", "namespace": "team"},
        "subjects": [{"kind": "ServiceAccount", "name": "e2e", "namespace": "team"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"}}))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(s.client.clone(), "team")
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(s.client.clone(), "team")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let body = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec});
    let sar = skiff_testsupport::eventually("the binding to take effect", || async {
        let (_, sar) = post_json(
            &s,
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            "",
            body.clone(),
        )
        .await;
        (sar["status"]["allowed"] == true).then_some(sar)
    })
    .await;
    assert_eq!(
        sar["status"]["reason"],
        "RBAC: allowed by RoleBinding \"team/e2e-reads\" of Role \"team/cm-reader\" to User \"system:serviceaccount:team:e2e\""
    );

    let (code, lsar) = post_json(
        &s,
        "/apis/authorization.k8s.io/v1/namespaces/team/localsubjectaccessreviews",
        "",
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
               "metadata": {"namespace": "team"}, "spec": spec}),
    )
    .await;
    assert_eq!(code, 201, "{lsar}");
    assert_eq!(lsar["status"]["allowed"], true);
    // A local review must stay in its namespace.
    let (code, e) = post_json(
        &s,
        "/apis/authorization.k8s.io/v1/namespaces/other/localsubjectaccessreviews",
        "",
        json!({"spec": spec}),
    )
    .await;
    assert_eq!(code, 400, "{e}");
    // A subject is required.
    let (code, e) = post_json(
        &s,
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        "",
        json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}),
    )
    .await;
    assert_eq!((code, e["reason"].as_str()), (422, Some("Invalid")), "{e}");
    // Exactly one of resourceAttributes and nonResourceAttributes.
    let (code, _) = post_json(
        &s,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        "",
        json!({"spec": {}}),
    )
    .await;
    assert_eq!(code, 422);

    let (code, rules) = post_json(
        &s,
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        "",
        json!({"spec": {"namespace": "default"}}),
    )
    .await;
    assert_eq!(code, 201);
    // The admin is bound to cluster-admin.
    let all = rules["status"]["resourceRules"].as_array().unwrap();
    assert!(
        all.iter()
            .any(|r| r["verbs"][0] == "*" && r["resources"][0] == "*"),
        "{rules}"
    );

    // A review has no metadata to print as a Table: 406, as kube-apiserver.
    let (code, e) = post_json(
        &s,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        "application/json;as=Table;v=v1;g=meta.k8s.io",
        json!({"spec": {"nonResourceAttributes": {"path": "/", "verb": "get"}}}),
    )
    .await;
    assert_eq!(
        (code, e["reason"].as_str()),
        (406, Some("NotAcceptable")),
        "{e}"
    );
}

#[tokio::test]
async fn token_reviews_authenticate_tokens() {
    let s = TestServer::start().await;
    let (code, r) = post_json(
        &s,
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "",
        json!({"spec": {"token": "not-a-token"}}),
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(r["status"]["authenticated"], false);
    let (code, _) = post_json(
        &s,
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "",
        json!({"spec": {}}),
    )
    .await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn strict_field_validation_reports_unknown_and_duplicate_fields() {
    let s = TestServer::start().await;
    let body = r#"{"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "my-dep", "labels": {"app": "nginx"}},
        "spec": {"unknownField": "foo", "replicas": 2, "replicas": 3,
          "selector": {"matchLabels": {"app": "nginx"}},
          "template": {"metadata": {"labels": {"app": "nginx"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:latest"}]}}}}"#;
    let req = http::Request::post(
        "/apis/apps/v1/namespaces/default/deployments?fieldManager=m&fieldValidation=Strict",
    )
    .header("content-type", "application/json")
    .body(body.as_bytes().to_vec())
    .unwrap();
    match s.client.request_text(req).await.unwrap_err() {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 400);
            assert!(
                e.message.contains(
                    r#"strict decoding error: unknown field "spec.unknownField", duplicate field "spec.replicas""#
                ),
                "{}",
                e.message
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // Warn (the default) creates the object and says why in warnings.
    let req = http::Request::post("/apis/apps/v1/namespaces/default/deployments")
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec())
        .unwrap();
    let created: serde_json::Value =
        serde_json::from_str(&s.client.request_text(req).await.unwrap()).unwrap();
    // The last value wins, as in Go's decoder.
    assert_eq!(created["spec"]["replicas"], 3);
}

#[tokio::test]
async fn status_conditions_without_a_transition_time_are_accepted() {
    use k8s_openapi::api::core::v1::Service;
    let s = TestServer::start().await;
    let svcs: Api<Service> = Api::namespaced(s.client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "st"},
        "spec": {"ports": [{"port": 80}]}}))
    .unwrap();
    svcs.create(&PostParams::default(), &svc).await.unwrap();
    let current = svcs.get("st").await.unwrap();
    let mut body = serde_json::to_value(&current).unwrap();
    // What client-go sends for metav1.Condition{} without a time: null.
    body["status"] = json!({"conditions": [{"type": "StatusUpdate", "status": "True",
        "reason": "E2E", "message": "Set from e2e test", "lastTransitionTime": null}]});
    let req = http::Request::put("/api/v1/namespaces/default/services/st/status")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    s.client.request_text(req).await.unwrap();
    // Typed clients still decode the Service.
    let updated = svcs.get("st").await.unwrap();
    let conditions = updated.status.unwrap().conditions.unwrap();
    assert_eq!(conditions[0].reason, "E2E");
}

#[tokio::test]
async fn deployment_status_writes_keep_the_labels() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    let s = TestServer::start().await;
    let deps: Api<Deployment> = Api::namespaced(s.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "d", "labels": {"test-deployment": "updated"}},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    // The deployment status strategy resets labels (kube-apiserver); annotations may change.
    deps.patch_status(
        "d",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"labels": {"test-deployment": "patched-status"},
            "annotations": {"a": "b"}}, "status": {"readyReplicas": 1}}),
        ),
    )
    .await
    .unwrap();
    let got = deps.get_status("d").await.unwrap();
    assert_eq!(got.metadata.labels.unwrap()["test-deployment"], "updated");
    assert_eq!(got.metadata.annotations.unwrap()["a"], "b");
    assert_eq!(got.status.unwrap().ready_replicas, Some(1));
}

#[tokio::test]
async fn the_kubernetes_service_has_an_endpoint_slice_like_its_endpoints() {
    use k8s_openapi::api::core::v1::Endpoints;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let s = TestServer::start().await;
    let eps: Api<Endpoints> = Api::namespaced(s.client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(s.client.clone(), "default");
    let ep = eps.get("kubernetes").await.unwrap();
    let subset = &ep.subsets.unwrap()[0];
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let slice = &list.items[0];
    let ips: Vec<&str> = slice
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.iter().map(String::as_str))
        .collect();
    let want: Vec<&str> = subset
        .addresses
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| a.ip.as_str())
        .collect();
    assert_eq!(ips, want);
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!(port.port, Some(subset.ports.as_ref().unwrap()[0].port));
    assert_eq!(port.name.as_deref(), Some("https"));
}

#[tokio::test]
async fn events_k8s_io_is_a_view_of_core_events() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    use kube::api::{DeleteParams, Patch, PatchParams, WatchEvent, WatchParams};
    let s = TestServer::start().await;
    let events: Api<Event> = Api::namespaced(s.client.clone(), "default");
    let all: Api<Event> = Api::all(s.client.clone());
    let core: Api<CoreEvent> = Api::namespaced(s.client.clone(), "default");
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"name": "event-test", "labels": {"testevent-constant": "true"}},
        "regarding": {"namespace": "default"}, "eventTime": "2017-09-19T13:49:16.000000Z",
        "note": "This is event-test", "action": "Do", "reason": "Test", "type": "Normal",
        "reportingController": "test-controller", "reportingInstance": "test-node"}))
    .unwrap();
    let mut watch = events
        .watch(
            &WatchParams::default().labels("testevent-constant=true"),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    let created = events.create(&PostParams::default(), &ev).await.unwrap();
    assert_eq!(created.note.as_deref(), Some("This is event-test"));
    let lp = ListParams::default().labels("testevent-constant=true");
    assert_eq!(all.list(&lp).await.unwrap().items.len(), 1);
    // The same object through core/v1, found by its source (= reporting controller).
    let by_source = core
        .list(&ListParams::default().fields("source=test-controller"))
        .await
        .unwrap();
    assert_eq!(by_source.items.len(), 1);
    assert_eq!(
        by_source.items[0].message.as_deref(),
        Some("This is event-test")
    );
    let by_controller = events
        .list(&ListParams::default().fields("reportingController=test-controller"))
        .await
        .unwrap();
    assert_eq!(by_controller.items.len(), 1);
    // A strategic merge patch in the events.k8s.io shape.
    events
        .patch(
            "event-test",
            &PatchParams::default(),
            &Patch::Strategic(json!({"note": "patched"})),
        )
        .await
        .unwrap();
    let got = events.get("event-test").await.unwrap();
    assert_eq!(got.note.as_deref(), Some("patched"));
    assert_eq!(got.reporting_controller.as_deref(), Some("test-controller"));
    // An update adding a series.
    let mut updated = got.clone();
    updated.series = Some(
        serde_json::from_value(
            json!({"count": 100, "lastObservedTime": "2017-09-19T13:49:16.000000Z"}),
        )
        .unwrap(),
    );
    events
        .replace("event-test", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(
        events
            .get("event-test")
            .await
            .unwrap()
            .series
            .unwrap()
            .count,
        100
    );
    // The watch saw it added in the events.k8s.io shape.
    match watch.next().await.unwrap().unwrap() {
        WatchEvent::Added(e) => {
            assert_eq!(e.reporting_controller.as_deref(), Some("test-controller"))
        }
        other => panic!("unexpected {other:?}"),
    }
    events
        .delete("event-test", &DeleteParams::default())
        .await
        .unwrap();
    assert!(all.list(&lp).await.unwrap().items.is_empty());
    assert!(core.get_opt("event-test").await.unwrap().is_none());
}

#[tokio::test]
async fn service_account_tokens_are_reviewed_and_their_issuer_discoverable() {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let s = TestServer::start().await;
    let sas: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "default");
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "mount-test"}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}})).unwrap();
    let token = sas
        .create_token_request("mount-test", &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let (code, review) = post_json(
        &s,
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "",
        json!({"spec": {"token": token}}),
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(review["status"]["authenticated"], true, "{review}");
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:default:mount-test"
    );
    assert!(
        review["status"]["user"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "system:serviceaccounts:default")
    );

    // OIDC discovery: the issuer tokens carry, and the key set verifying them.
    let get = |path: &str| http::Request::get(path).body(Vec::new()).unwrap();
    let conf: serde_json::Value = serde_json::from_str(
        &s.client
            .request_text(get("/.well-known/openid-configuration"))
            .await
            .unwrap(),
    )
    .unwrap();
    let claims = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(conf["issuer"], claims["iss"]);
    assert!(
        conf["jwks_uri"]
            .as_str()
            .unwrap()
            .ends_with("/openid/v1/jwks")
    );
    let jwks: serde_json::Value =
        serde_json::from_str(&s.client.request_text(get("/openid/v1/jwks")).await.unwrap())
            .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
}

#[tokio::test]
async fn ephemeral_containers_are_added_through_their_subresource() {
    use kube::api::{Patch, PatchParams};
    let s = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "target"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let debugger = json!({"name": "debugger", "image": "busybox", "targetContainerName": "main",
        "command": ["sh"], "stdin": true, "tty": true});
    // What `kubectl debug` and client-go's UpdateEphemeralContainers send.
    let req = http::Request::patch("/api/v1/namespaces/default/pods/target/ephemeralcontainers")
        .header("content-type", "application/strategic-merge-patch+json")
        .body(serde_json::to_vec(&json!({"spec": {"ephemeralContainers": [debugger]}})).unwrap())
        .unwrap();
    s.client.request_text(req).await.unwrap();
    let got = pods.get("target").await.unwrap();
    let eph = got
        .spec
        .as_ref()
        .unwrap()
        .ephemeral_containers
        .clone()
        .unwrap();
    assert_eq!(eph[0].name, "debugger");
    assert_eq!(eph[0].target_container_name.as_deref(), Some("main"));

    // A regular update cannot remove it; the subresource cannot change it.
    let mut without = got.clone();
    without.spec.as_mut().unwrap().ephemeral_containers = None;
    let kept = pods
        .replace("target", &PostParams::default(), &without)
        .await
        .unwrap();
    assert_eq!(kept.spec.unwrap().ephemeral_containers.unwrap().len(), 1);
    let changed =
        json!({"spec": {"ephemeralContainers": [{"name": "debugger", "image": "other"}]}});
    let req = http::Request::patch("/api/v1/namespaces/default/pods/target/ephemeralcontainers")
        .header("content-type", "application/merge-patch+json")
        .body(serde_json::to_vec(&changed).unwrap())
        .unwrap();
    match s.client.request_text(req).await.unwrap_err() {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains("may not be changed"), "{}", e.message);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Fields an ephemeral container cannot have are refused.
    let with_port = json!({"spec": {"ephemeralContainers": [debugger,
        {"name": "second", "image": "busybox", "ports": [{"containerPort": 80}]}]}});
    let err = pods
        .patch_subresource(
            "ephemeralcontainers",
            "target",
            &PatchParams::default(),
            &Patch::Strategic(with_port),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 422 && e.message.contains("cannot be set for an Ephemeral Container")),
        "{err:?}"
    );
}

#[tokio::test]
async fn ephemeral_containers_may_carry_empty_resources_as_kubectl_debug_sends() {
    let s = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "t"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let body = json!({"spec": {"ephemeralContainers": [{"name": "debugger", "image": "busybox",
        "resources": {}, "terminationMessagePolicy": "File", "targetContainerName": "main"}]}});
    let req = http::Request::patch("/api/v1/namespaces/default/pods/t/ephemeralcontainers")
        .header("content-type", "application/strategic-merge-patch+json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    s.client.request_text(req).await.unwrap();
}

#[tokio::test]
async fn huge_grace_periods_do_not_break_deletion() {
    use kube::api::DeleteParams;
    let s = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "slow"},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 1_000_000_000_000i64,
            "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // The pod's own grace period (security review I4: this panicked the handler).
    pods.delete("slow", &DeleteParams::default()).await.unwrap();
    let p = pods.get("slow").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    // A query grace period at the int64 limit on another pod.
    let other: Pod = serde_json::from_value(json!({"metadata": {"name": "slower"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &other).await.unwrap();
    let req = http::Request::delete(format!(
        "/api/v1/namespaces/default/pods/slower?gracePeriodSeconds={}",
        i64::MAX
    ))
    .body(Vec::new())
    .unwrap();
    s.client.request_text(req).await.unwrap();
    assert!(
        pods.get("slower")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    // A shorter grace period still finishes them.
    for name in ["slow", "slower"] {
        pods.delete(
            name,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(pods.get_opt(name).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn a_watch_timeout_at_the_int64_limit_is_a_watch_without_one() {
    use futures::StreamExt;
    use kube::api::WatchEvent;
    let s = TestServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    // kube-rs caps its own timeout; the raw query reaches the server as sent.
    let req = http::Request::get(format!(
        "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds={}",
        i64::MAX
    ))
    .body(Vec::new())
    .unwrap();
    let mut stream = s
        .client
        .request_events::<ConfigMap>(req)
        .await
        .unwrap()
        .boxed();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "seen"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Added(c) => assert_eq!(c.metadata.name.as_deref(), Some("seen")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn reviews_answer_in_protobuf_when_asked() {
    let s = TestServer::start().await;
    let req = http::Request::post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        .header("content-type", "application/json")
        .header(
            "accept",
            "application/vnd.kubernetes.protobuf, application/json",
        )
        .body(
            serde_json::to_vec(
                &json!({"spec": {"nonResourceAttributes": {"path": "/", "verb": "get"}}}),
            )
            .unwrap(),
        )
        .unwrap();
    let resp = s
        .client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap();
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/vnd.kubernetes.protobuf"
    );
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let review = skiff_api::protobuf::decode(&body).unwrap();
    assert_eq!(review["kind"], "SelfSubjectAccessReview");
    assert_eq!(review["status"]["allowed"], true);
}
