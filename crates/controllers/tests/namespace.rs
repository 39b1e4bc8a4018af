//! The namespace controller against a real API server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_controllers::{Config, Context};
use skiff_testsupport::{TestServer, eventually};

fn context(client: &Client) -> Context {
    Context::new(client.clone(), Config::default())
}

async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
    )
    .await
    .unwrap();
}

async fn populate(client: &Client, ns: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "b"}})).unwrap(),
    )
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}});
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = json!({
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}
    });
    deployments
        .create(&PostParams::default(), &serde_json::from_value(d).unwrap())
        .await
        .unwrap();
}

async fn content_count(client: &Client, ns: &str) -> usize {
    let lp = ListParams::default();
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
        + Api::<Secret>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
            .map(|l| l.items.len())
            .unwrap_or(0)
        + Api::<Pod>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
            .map(|l| l.items.len())
            .unwrap_or(0)
        + Api::<Deployment>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
            .map(|l| l.items.len())
            .unwrap_or(0)
}

#[tokio::test]
async fn namespace_deletion_removes_content_and_the_namespace() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controller = tokio::spawn(skiff_controllers::namespace::run(context(&client)));
    create_namespace(&client, "doomed").await;
    populate(&client, "doomed").await;
    assert_eq!(content_count(&client, "doomed").await, 4);

    let api: Api<Namespace> = Api::all(client.clone());
    api.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    eventually("namespace and content gone", || async {
        let gone = api.get_opt("doomed").await.unwrap().is_none();
        (gone && content_count(&client, "doomed").await == 0).then_some(())
    })
    .await;
    // Other namespaces are untouched.
    assert!(api.get_opt("default").await.unwrap().is_some());
    controller.abort();
}

#[tokio::test]
async fn namespace_terminates_with_conditions_until_finalizers_release_content() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controller = tokio::spawn(skiff_controllers::namespace::run(context(&client)));
    create_namespace(&client, "held").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "held");
    let cm = json!({"metadata": {"name": "keep", "finalizers": ["example.com/hold"]}});
    cms.create(&PostParams::default(), &serde_json::from_value(cm).unwrap())
        .await
        .unwrap();

    let api: Api<Namespace> = Api::all(client.clone());
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let ns = eventually("Terminating with conditions", || async {
        let ns = api.get_opt("held").await.unwrap()?;
        let status = ns.status.clone()?;
        let remaining = status
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "NamespaceFinalizersRemaining")?
            .status
            .clone();
        (status.phase.as_deref() == Some("Terminating") && remaining == "True").then_some(ns)
    })
    .await;
    assert!(ns.metadata.deletion_timestamp.is_some());
    let conds = ns.status.unwrap().conditions.unwrap();
    let content = conds
        .iter()
        .find(|c| c.type_ == "NamespaceContentRemaining")
        .unwrap();
    assert_eq!(content.status, "True");
    assert_eq!(content.reason.as_deref(), Some("SomeResourcesRemain"));
    assert!(
        content
            .message
            .as_deref()
            .unwrap()
            .contains("configmaps has 1 resource instances")
    );
    // New content is refused while terminating.
    let refused = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "new"}})).unwrap(),
        )
        .await;
    assert!(refused.is_err());

    // Release the finalizer: the namespace finishes.
    cms.patch(
        "keep",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("namespace gone", || async {
        api.get_opt("held").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(
        cms.list(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0),
        0
    );
    controller.abort();
}

#[tokio::test]
async fn custom_resources_defined_after_discovery_are_deleted_with_their_namespace() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject};
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controller = tokio::spawn(skiff_controllers::namespace::run(context(&client)));
    // A first deletion fills the controller's discovery cache.
    create_namespace(&client, "early").await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete("early", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the first namespace is gone", || async {
        namespaces
            .get_opt("early")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    // Then a definition, an object of it, and the namespace's deletion,
    // all within the cache's lifetime.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "gadgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "gadgets", "kind": "Gadget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    create_namespace(&client, "late").await;
    let ar = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("example.com", "v1", "Gadget"),
        "gadgets",
    );
    let gadgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "late", &ar);
    let gadget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}
    }))
    .unwrap();
    eventually("the custom resource is served", || async {
        gadgets.create(&PostParams::default(), &gadget).await.ok()
    })
    .await;
    namespaces
        .delete("late", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the namespace and its custom resource are gone", || async {
        let ns_gone = namespaces.get_opt("late").await.unwrap().is_none();
        let cr_gone = gadgets.get_opt("g").await.unwrap().is_none();
        (ns_gone && cr_gone).then_some(())
    })
    .await;
    controller.abort();
}
