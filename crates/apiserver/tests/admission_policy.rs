//! ValidatingAdmissionPolicy against the in-process API server: the
//! Kubernetes documentation's replica limit, with a binding's namespace
//! selector, params from a ConfigMap, messageExpression, matchConditions,
//! variables, the Warn action and failurePolicy.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use skiff_testsupport::{TestServer, eventually};

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        }
    }))
    .unwrap()
}

async fn namespace(s: &TestServer, name: &str, labels: Value) {
    let api: Api<Namespace> = Api::all(s.client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

async fn policy(s: &TestServer, spec: Value) {
    let api: Api<ValidatingAdmissionPolicy> = Api::all(s.client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(spec).unwrap(),
    )
    .await
    .unwrap();
}

async fn binding(s: &TestServer, spec: Value) {
    let api: Api<ValidatingAdmissionPolicyBinding> = Api::all(s.client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(spec).unwrap(),
    )
    .await
    .unwrap();
}

/// Create until refused (the server follows policies asynchronously).
async fn refused(api: &Api<Deployment>, d: Deployment) -> (u16, String) {
    eventually("the policy takes effect", || async {
        match api.create(&PostParams::default(), &d).await {
            Err(kube::Error::Api(e)) => Some((e.code, e.message)),
            Ok(created) => {
                let name = created.metadata.name.unwrap_or_default();
                let _ = api.delete(&name, &Default::default()).await;
                None
            }
            Err(_) => None,
        }
    })
    .await
}

#[tokio::test]
async fn a_policy_limits_deployment_replicas_where_its_binding_applies() {
    let s = TestServer::start().await;
    namespace(&s, "test", json!({"environment": "test"})).await;
    namespace(&s, "prod", json!({"environment": "prod"})).await;
    policy(&s, json!({
        "metadata": {"name": "demo-policy.example.com"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]},
            "validations": [{"expression": "object.spec.replicas <= 5"}]
        }
    }))
    .await;
    binding(
        &s,
        json!({
            "metadata": {"name": "demo-binding-test.example.com"},
            "spec": {
                "policyName": "demo-policy.example.com",
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"environment": "test"}}}
            }
        }),
    )
    .await;
    let test: Api<Deployment> = Api::namespaced(s.client.clone(), "test");
    let (code, message) = refused(&test, deployment("big", 6)).await;
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"
    );
    test.create(&PostParams::default(), &deployment("small", 5))
        .await
        .unwrap();
    // The binding's namespace selector leaves prod alone.
    let prod: Api<Deployment> = Api::namespaced(s.client.clone(), "prod");
    prod.create(&PostParams::default(), &deployment("big", 6))
        .await
        .unwrap();
    // Updates are checked too.
    let mut small = test.get("small").await.unwrap();
    small.spec.as_mut().unwrap().replicas = Some(9);
    match test.replace("small", &PostParams::default(), &small).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 422),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn params_message_expressions_conditions_variables_warn_and_failure_policy() {
    let s = TestServer::start().await;
    namespace(&s, "team", json!({})).await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "team");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "limits"}, "data": {"maxReplicas": "3"}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    policy(&s, json!({
        "metadata": {"name": "replica-limit"},
        "spec": {
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]},
            "matchConditions": [{"name": "not-exempt", "expression": "!has(object.metadata.labels) || !('exempt' in object.metadata.labels)"}],
            "variables": [{"name": "limit", "expression": "int(params.data.maxReplicas)"}],
            "validations": [{
                "expression": "object.spec.replicas <= variables.limit",
                "messageExpression": "'replicas ' + string(object.spec.replicas) + ' above ' + string(variables.limit)",
                "reason": "Forbidden"
            }]
        }
    }))
    .await;
    binding(
        &s,
        json!({
            "metadata": {"name": "replica-limit-team"},
            "spec": {
                "policyName": "replica-limit",
                "paramRef": {"name": "limits", "parameterNotFoundAction": "Deny"},
                "validationActions": ["Deny"]
            }
        }),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), "team");
    let (code, message) = refused(&deployments, deployment("four", 4)).await;
    assert_eq!(code, 403, "{message}");
    assert_eq!(
        message,
        "ValidatingAdmissionPolicy 'replica-limit' with binding 'replica-limit-team' denied request: replicas 4 above 3"
    );
    // matchConditions: an exempt object is not checked.
    let mut exempt = deployment("exempt", 4);
    exempt.metadata.labels = Some([("exempt".to_string(), "yes".to_string())].into());
    deployments
        .create(&PostParams::default(), &exempt)
        .await
        .unwrap();
    // Without its params (parameterNotFoundAction Deny) the policy refuses.
    cms.delete("limits", &Default::default()).await.unwrap();
    let (code, message) = refused(&deployments, deployment("one", 1)).await;
    assert_eq!(code, 422);
    assert!(
        message.ends_with("no params found for policy binding with `Deny` parameterNotFoundAction"),
        "{message}"
    );

    // Warn: a Warning header, the write goes through.
    policy(&s, json!({
        "metadata": {"name": "name-length"},
        "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]},
            "validations": [{"expression": "object.metadata.name.size() <= 5", "message": "name too long"}]
        }
    }))
    .await;
    binding(
        &s,
        json!({
            "metadata": {"name": "name-length-warn"},
            "spec": {"policyName": "name-length", "validationActions": ["Warn"]}
        }),
    )
    .await;
    let warnings = eventually("the warning is sent", || async {
        let name = format!("long-name-{}", uuid::Uuid::new_v4());
        let req = http::Request::post("/api/v1/namespaces/team/configmaps")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&json!({"metadata": {"name": name}})).unwrap())
            .unwrap();
        let resp = s
            .client
            .send(req.map(kube::client::Body::from))
            .await
            .ok()?;
        assert!(resp.status().is_success());
        let w: Vec<String> = resp
            .headers()
            .get_all("warning")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        (!w.is_empty()).then_some(w)
    })
    .await;
    assert_eq!(
        warnings,
        vec![
            "299 - \"Validation failed for ValidatingAdmissionPolicy 'name-length' with binding 'name-length-warn': name too long\""
        ]
    );

    // An expression that errors follows failurePolicy (Fail by default).
    policy(&s, json!({
        "metadata": {"name": "broken"},
        "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["secrets"]}]},
            "validations": [{"expression": "object.spec.nothing == 1"}]
        }
    }))
    .await;
    binding(
        &s,
        json!({
            "metadata": {"name": "broken"},
            "spec": {"policyName": "broken", "validationActions": ["Deny"]}
        }),
    )
    .await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(s.client.clone(), "team");
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap();
    let message = eventually("the failing policy refuses", || async {
        match secrets.create(&PostParams::default(), &secret).await {
            Err(kube::Error::Api(e)) => Some(e.message),
            Ok(_) => {
                let _ = secrets.delete("s", &Default::default()).await;
                None
            }
            Err(_) => None,
        }
    })
    .await;
    assert!(
        message.starts_with("ValidatingAdmissionPolicy 'broken' with binding 'broken' denied request: expression 'object.spec.nothing == 1' resulted in error:"),
        "{message}"
    );
}
