//! CustomResourceDefinitions against the in-process API server, through
//! kube-rs: a definition is served at once, its objects are pruned,
//! defaulted and validated by its schema, its status and Table columns are
//! what Kubernetes shows, and deleting it deletes its objects.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use skiff_testsupport::{TestServer, eventually};

const GROUP: &str = "stable.example.com";

fn crontab_definition(scope: &str, plural: &str, kind: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{GROUP}")},
        "spec": {
            "group": GROUP, "scope": scope,
            "names": {"plural": plural, "kind": kind, "shortNames": [format!("{plural}-s")]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {
                            "cronSpec": {"type": "string"},
                            "image": {"type": "string"},
                            "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1}
                        }},
                        "status": {"type": "object", "properties": {"ready": {"type": "integer"}, "selector": {"type": "string"}}}
                    }
                }},
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.ready",
                    "labelSelectorPath": ".status.selector"
                }},
                "selectableFields": [{"jsonPath": ".spec.image"}],
                "additionalPrinterColumns": [
                    {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
                    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}
                ]
            }]
        }
    }))
    .unwrap()
}

fn condition<'a>(crd: &'a Value, ty: &str) -> Option<&'a Value> {
    crd["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

async fn established(crds: &Api<CustomResourceDefinition>, name: &str) -> Value {
    eventually("the definition is established", || async {
        let crd = serde_json::to_value(crds.get(name).await.ok()?).ok()?;
        (condition(&crd, "Established")?["status"] == "True").then_some(crd)
    })
    .await
}

fn api(client: &kube::Client, ns: Option<&str>, plural: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": kind,
        "metadata": {"name": name, "labels": {"app": "cron"}},
        "spec": spec
    }))
    .unwrap()
}

fn refused<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String, String) {
    match r {
        Err(kube::Error::Api(e)) => (e.code, e.reason, e.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_definition_is_served_with_its_schema_status_and_columns() {
    let s = TestServer::start().await;
    s.namespace("team").await;
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
    crds.create(
        &PostParams::default(),
        &crontab_definition("Namespaced", "crontabs", "CronTab"),
    )
    .await
    .unwrap();
    let crd = established(&crds, "crontabs.stable.example.com").await;
    assert_eq!(
        condition(&crd, "NamesAccepted").unwrap()["reason"],
        "NoConflicts"
    );
    assert_eq!(
        condition(&crd, "Established").unwrap()["reason"],
        "InitialNamesAccepted"
    );
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "CronTab");
    assert_eq!(crd["status"]["acceptedNames"]["listKind"], "CronTabList");
    assert_eq!(crd["status"]["acceptedNames"]["singular"], "crontab");
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(crd["spec"]["conversion"]["strategy"], "None");

    // Discovery lists the resource and its status subresource.
    let req = http::Request::get(format!("/apis/{GROUP}/v1"))
        .body(Vec::new())
        .unwrap();
    let list: Value = s.client.request(req).await.unwrap();
    let names: Vec<&str> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["crontabs", "crontabs/status", "crontabs/scale"]);
    assert_eq!(list["resources"][0]["shortNames"], json!(["crontabs-s"]));
    let discovery = kube::Discovery::new(s.client.clone()).run().await.unwrap();
    assert!(discovery.groups().any(|g| g.name() == GROUP));

    // OpenAPI v3 and v2 describe the kind (kubectl explain, validation).
    let get = |path: String| {
        let client = s.client.clone();
        async move {
            let req = http::Request::get(path).body(Vec::new()).unwrap();
            client.request::<Value>(req).await.unwrap()
        }
    };
    let index = get("/openapi/v3".into()).await;
    let url = index["paths"][format!("apis/{GROUP}/v1")]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let doc = get(url).await;
    let schema = &doc["components"]["schemas"]["com.example.stable.v1.CronTab"];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"],
        json!([{"group": GROUP, "version": "v1", "kind": "CronTab"}])
    );
    assert_eq!(
        schema["properties"]["spec"]["properties"]["replicas"]["maximum"].as_f64(),
        Some(10.0)
    );
    assert!(
        doc["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object()
    );
    assert!(
        doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]["patch"]
            .is_object()
    );
    let v2 = get("/openapi/v2".into()).await;
    assert_eq!(
        v2["definitions"]["com.example.stable.v1.CronTab"]["properties"]["metadata"]["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    // Every reference of the list resolves (kubectl 1.27 checks them all).
    let list_meta =
        v2["definitions"]["com.example.stable.v1.CronTabList"]["properties"]["metadata"]["$ref"]
            .as_str()
            .unwrap()
            .trim_start_matches("#/definitions/")
            .to_string();
    assert!(v2["definitions"][&list_meta].is_object(), "{list_meta}");

    let tabs = api(&s.client, Some("team"), "crontabs", "CronTab");
    // Unknown fields are pruned (and reported); defaults are set.
    let mut with_unknown = object(
        "CronTab",
        "a",
        json!({"cronSpec": "* * * * */5", "bogus": 1}),
    );
    with_unknown.data["extra"] = json!(true);
    let created = tabs
        .create(&PostParams::default(), &with_unknown)
        .await
        .unwrap();
    assert_eq!(
        created.data["spec"],
        json!({"cronSpec": "* * * * */5", "replicas": 1})
    );
    assert!(created.data.get("extra").is_none());
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some());

    // fieldValidation=Strict refuses unknown fields.
    let req = http::Request::post(format!(
        "/apis/{GROUP}/v1/namespaces/team/crontabs?fieldValidation=Strict"
    ))
    .header("content-type", "application/json")
    .body(
        serde_json::to_vec(&object(
            "CronTab",
            "strict",
            json!({"cronSpec": "x", "bogus": 1}),
        ))
        .unwrap(),
    )
    .unwrap();
    let (code, _, message) = refused(s.client.request::<Value>(req).await);
    assert_eq!(code, 400);
    assert_eq!(
        message,
        "strict decoding error: unknown field \"spec.bogus\""
    );

    // The schema's bounds and types: 422 with Kubernetes' message.
    let (code, reason, message) = refused(
        tabs.create(
            &PostParams::default(),
            &object("CronTab", "b", json!({"replicas": 11})),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        message,
        "CronTab.stable.example.com \"b\" is invalid: spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"
    );
    let (code, _, message) = refused(
        tabs.create(
            &PostParams::default(),
            &object("CronTab", "c", json!({"image": 3})),
        )
        .await,
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.image in body must be of type string: \"integer\""),
        "{message}"
    );

    // Merge patch works; strategic merge is refused as kube-apiserver does.
    let patched = tabs
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "nginx"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["image"], "nginx");
    assert_eq!(patched.metadata.generation, Some(2));
    let (code, _, _) = refused(
        tabs.patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"image": "x"}})),
        )
        .await,
    );
    assert_eq!(code, 415);

    // Status only through /status; a status change keeps the generation.
    let mut with_status = tabs.get("a").await.unwrap();
    with_status.data["status"] = json!({"ready": 1});
    let replaced = tabs
        .replace("a", &PostParams::default(), &with_status)
        .await
        .unwrap();
    assert!(replaced.data.get("status").is_none());
    let status = tabs
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(status.data["status"]["ready"], 2);
    assert_eq!(status.metadata.generation, Some(2));

    // The scale subresource reads and writes the definition's paths.
    tabs.patch_status(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"selector": "app=cron"}})),
    )
    .await
    .unwrap();
    let scale = tabs.get_scale("a").await.unwrap();
    assert_eq!(scale.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(scale.status.as_ref().unwrap().replicas, 2);
    assert_eq!(
        scale.status.as_ref().unwrap().selector.as_deref(),
        Some("app=cron")
    );
    let scaled = tabs
        .patch_scale(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(5));
    assert_eq!(tabs.get("a").await.unwrap().data["spec"]["replicas"], 5);
    // The schema still holds through /scale.
    let (code, _, _) = refused(
        tabs.patch_scale(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 50}})),
        )
        .await,
    );
    assert_eq!(code, 422);

    // Label selectors, and the Table kubectl asks for.
    let listed = tabs
        .list(&ListParams::default().labels("app=cron"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    // Field selectors: metadata.name and the definition's selectableFields.
    let by = |sel: &str| {
        let tabs = tabs.clone();
        let sel = sel.to_string();
        async move { tabs.list(&ListParams::default().fields(&sel)).await }
    };
    assert_eq!(by("metadata.name=a").await.unwrap().items.len(), 1);
    assert_eq!(by("spec.image=nginx").await.unwrap().items.len(), 1);
    assert!(by("spec.image=other").await.unwrap().items.is_empty());
    let (code, _, message) = refused(by("spec.cronSpec=x").await);
    assert_eq!(code, 400);
    assert!(
        message.contains("field label not supported: spec.cronSpec"),
        "{message}"
    );
    assert!(
        tabs.list(&ListParams::default().labels("app=other"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let req = http::Request::get(format!("/apis/{GROUP}/v1/namespaces/team/crontabs"))
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
    let table: Value = s.client.request(req).await.unwrap();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, vec!["Name", "Spec", "Replicas"]);
    assert_eq!(table["rows"][0]["cells"], json!(["a", "* * * * */5", 5]));

    // A watch sees the objects.
    let mut events = std::pin::pin!(kube::runtime::watcher(tabs.clone(), Default::default()));
    use futures::StreamExt;
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, kube::runtime::watcher::Event::Init),
        "{first:?}"
    );
}

#[tokio::test]
async fn clashing_names_are_not_accepted_and_bad_definitions_are_refused() {
    let s = TestServer::start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
    crds.create(
        &PostParams::default(),
        &crontab_definition("Cluster", "widgets", "Widget"),
    )
    .await
    .unwrap();
    established(&crds, "widgets.stable.example.com").await;
    // The same kind under another plural: NamesAccepted False.
    crds.create(
        &PostParams::default(),
        &crontab_definition("Cluster", "gadgets", "Widget"),
    )
    .await
    .unwrap();
    let crd = eventually("the clash is reported", || async {
        let crd = serde_json::to_value(crds.get("gadgets.stable.example.com").await.ok()?).ok()?;
        (condition(&crd, "NamesAccepted")?["status"] == "False").then_some(crd)
    })
    .await;
    assert_eq!(
        condition(&crd, "NamesAccepted").unwrap()["reason"],
        "NameConflict"
    );
    assert_eq!(condition(&crd, "Established").unwrap()["status"], "False");
    let req = http::Request::get(format!("/apis/{GROUP}/v1/gadgets"))
        .body(Vec::new())
        .unwrap();
    let (code, _, _) = refused(s.client.request::<Value>(req).await);
    assert_eq!(code, 404);

    // Cluster-scoped objects have no namespace.
    let widgets = api(&s.client, None, "widgets", "Widget");
    let w = widgets
        .create(&PostParams::default(), &object("Widget", "w", json!({})))
        .await
        .unwrap();
    assert_eq!(w.metadata.namespace, None);

    // A name that is not plural.group, two storage versions, no schema.
    let mut bad =
        serde_json::to_value(crontab_definition("Namespaced", "things", "Thing")).unwrap();
    bad["metadata"]["name"] = json!("wrong.stable.example.com");
    let (code, _, message) = refused(
        crds.create(
            &PostParams::default(),
            &serde_json::from_value(bad).unwrap(),
        )
        .await,
    );
    assert_eq!(code, 422);
    assert!(message.contains("metadata.name: Invalid value: \"wrong.stable.example.com\": must be spec.names.plural+\".\"+spec.group"), "{message}");
    let mut no_schema =
        serde_json::to_value(crontab_definition("Namespaced", "things", "Thing")).unwrap();
    no_schema["spec"]["versions"][0]
        .as_object_mut()
        .unwrap()
        .remove("schema");
    let (code, _, message) = refused(
        crds.create(
            &PostParams::default(),
            &serde_json::from_value(no_schema).unwrap(),
        )
        .await,
    );
    assert_eq!(code, 422);
    assert!(
        message.contains(
            "spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn deleting_a_definition_deletes_its_objects_first() {
    let s = TestServer::start().await;
    s.namespace("team").await;
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
    crds.create(
        &PostParams::default(),
        &crontab_definition("Namespaced", "crontabs", "CronTab"),
    )
    .await
    .unwrap();
    established(&crds, "crontabs.stable.example.com").await;
    let tabs = api(&s.client, Some("team"), "crontabs", "CronTab");
    tabs.create(
        &PostParams::default(),
        &object("CronTab", "plain", json!({})),
    )
    .await
    .unwrap();
    let mut held = object("CronTab", "held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    tabs.create(&PostParams::default(), &held).await.unwrap();

    crds.delete("crontabs.stable.example.com", &DeleteParams::default())
        .await
        .unwrap();
    // The definition waits for its objects; the held one is being deleted.
    let crd = eventually("the plain object is gone, the held one marked", || async {
        let h = tabs.get("held").await.ok()?;
        h.metadata.deletion_timestamp.as_ref()?;
        tabs.get_opt("plain").await.ok()?.is_none().then_some(())?;
        serde_json::to_value(crds.get("crontabs.stable.example.com").await.ok()?).ok()
    })
    .await;
    assert_eq!(condition(&crd, "Terminating").unwrap()["status"], "True");
    assert!(
        crd["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .contains(&json!("customresourcecleanup.apiextensions.k8s.io"))
    );
    // No new objects while the definition terminates.
    let (code, _, message) = refused(
        tabs.create(
            &PostParams::default(),
            &object("CronTab", "late", json!({})),
        )
        .await,
    );
    assert_eq!(code, 405, "{message}");

    // Releasing the held object lets the definition go.
    tabs.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the definition is gone", || async {
        crds.get_opt("crontabs.stable.example.com")
            .await
            .ok()
            .filter(Option::is_none)
            .map(|_| ())
    })
    .await;
    let req = http::Request::get(format!("/apis/{GROUP}/v1/namespaces/team/crontabs"))
        .body(Vec::new())
        .unwrap();
    let (code, _, _) = refused(s.client.request::<Value>(req).await);
    assert_eq!(code, 404);
}

#[tokio::test]
async fn every_served_version_shows_objects_in_its_own_apiversion() {
    let s = TestServer::start().await;
    s.namespace("team").await;
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
    let mut def =
        serde_json::to_value(crontab_definition("Namespaced", "crontabs", "CronTab")).unwrap();
    let mut beta = def["spec"]["versions"][0].clone();
    beta["name"] = json!("v1beta1");
    beta["storage"] = json!(false);
    def["spec"]["versions"].as_array_mut().unwrap().push(beta);
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(def).unwrap(),
    )
    .await
    .unwrap();
    established(&crds, "crontabs.stable.example.com").await;
    let versioned = |version: &str| {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, version, "CronTab"),
            "crontabs",
        );
        Api::<DynamicObject>::namespaced_with(s.client.clone(), "team", &ar)
    };
    let (v1, v1beta1) = (versioned("v1"), versioned("v1beta1"));
    let mut obj = object("CronTab", "a", json!({"cronSpec": "x"}));
    obj.types.as_mut().unwrap().api_version = format!("{GROUP}/v1beta1");
    let created = v1beta1.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(
        created.types.unwrap().api_version,
        "stable.example.com/v1beta1"
    );
    // Stored in the storage version, shown in each.
    assert_eq!(
        v1beta1.get("a").await.unwrap().types.unwrap().api_version,
        "stable.example.com/v1beta1"
    );
    assert_eq!(
        v1.get("a").await.unwrap().types.unwrap().api_version,
        "stable.example.com/v1"
    );
    let listed = v1beta1.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed.items[0].types.as_ref().unwrap().api_version,
        "stable.example.com/v1beta1"
    );
    let patched = v1beta1
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "i"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.types.unwrap().api_version,
        "stable.example.com/v1beta1"
    );
    let req = http::Request::get(format!("/apis/{GROUP}/v1/namespaces/team/crontabs"))
        .body(Vec::new())
        .unwrap();
    let raw: Value = s.client.request(req).await.unwrap();
    assert_eq!(raw["items"][0]["apiVersion"], "stable.example.com/v1");
    assert_eq!(raw["items"][0]["spec"]["image"], "i");
    // A watch in v1beta1 sends v1beta1 objects.
    use futures::StreamExt;
    let mut events = std::pin::pin!(kube::runtime::watcher(v1beta1.clone(), Default::default()));
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(ev) = events.next().await {
            if let kube::runtime::watcher::Event::InitApply(o) = ev.unwrap() {
                return o;
            }
        }
        panic!("watch ended")
    })
    .await
    .unwrap();
    assert_eq!(
        seen.types.unwrap().api_version,
        "stable.example.com/v1beta1"
    );

    // A default added to the definition shows on objects stored before it
    // (defaulting on read, as from etcd).
    let mut def =
        serde_json::to_value(crds.get("crontabs.stable.example.com").await.unwrap()).unwrap();
    def["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["tier"] =
        json!({"type": "string", "default": "gold"});
    crds.replace(
        "crontabs.stable.example.com",
        &PostParams::default(),
        &serde_json::from_value(def).unwrap(),
    )
    .await
    .unwrap();
    let read = eventually("the new default shows on read", || async {
        let o = v1.get("a").await.ok()?;
        (o.data["spec"]["tier"] == "gold").then_some(o)
    })
    .await;
    assert_eq!(read.data["spec"]["cronSpec"], "x");
    let listed = v1.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].data["spec"]["tier"], "gold");
}

fn scaler_definition(spec_rules: Value, extra: Value) -> CustomResourceDefinition {
    let mut props = json!({
        "minReplicas": {"type": "integer"},
        "maxReplicas": {"type": "integer"},
        "mode": {"type": "string", "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "mode is immutable"}]}
    });
    props
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("scalers.{GROUP}")},
        "spec": {
            "group": GROUP, "scope": "Namespaced",
            "names": {"plural": "scalers", "kind": "Scaler"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": props,
                             "x-kubernetes-validations": spec_rules}
                }}}
            }]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn cel_validation_rules_refuse_objects_and_bad_definitions() {
    let s = TestServer::start().await;
    s.namespace("team").await;
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());

    // A rule that does not compile, and one too expensive: the definition is refused.
    let rules =
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule";
    let bad = scaler_definition(json!([{"rule": "self.minReplicas >"}]), json!({}));
    let (code, _, message) = refused(crds.create(&PostParams::default(), &bad).await);
    assert_eq!(code, 422);
    assert!(
        message.contains(&format!(r#"{rules}: Invalid value: apiextensions.ValidationRule{{Rule:"self.minReplicas >", Message:"""#)),
        "{message}"
    );
    assert!(
        message.contains("compilation failed: ERROR: <input>:1:"),
        "{message}"
    );
    let costly = scaler_definition(
        json!([{"rule": "self.groups.all(g, g.names.all(n, n != ''))"}]),
        json!({"groups": {"type": "array", "items": {"type": "object", "properties": {
            "names": {"type": "array", "items": {"type": "string"}}}}}}),
    );
    let (code, _, message) = refused(crds.create(&PostParams::default(), &costly).await);
    assert_eq!(code, 422);
    assert!(
        message.contains(&format!(
            "{rules}: Forbidden: estimated rule cost exceeds budget by factor of more than 100x"
        )),
        "{message}"
    );

    // Bounded, the same rule is accepted.
    let good = scaler_definition(
        json!([
            {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"},
            {"rule": "!has(self.groups) || self.groups.all(g, g.names.all(n, n != ''))", "fieldPath": ".groups",
             "reason": "FieldValueForbidden", "messageExpression": "'no empty names in ' + string(size(self.groups)) + ' groups'"}
        ]),
        json!({"groups": {"type": "array", "maxItems": 10, "items": {"type": "object", "properties": {
            "names": {"type": "array", "maxItems": 10, "items": {"type": "string"}}}}}}),
    );
    crds.create(&PostParams::default(), &good).await.unwrap();
    established(&crds, &format!("scalers.{GROUP}")).await;
    let scalers = api(&s.client, Some("team"), "scalers", "Scaler");

    let (code, _, message) = refused(
        scalers
            .create(
                &PostParams::default(),
                &object(
                    "Scaler",
                    "a",
                    json!({"minReplicas": 5, "maxReplicas": 2, "mode": "fast",
                    "groups": [{"names": ["x", ""]}]}),
                ),
            )
            .await,
    );
    assert_eq!(code, 422);
    assert!(
        message
            .contains(r#"spec: Invalid value: "object": minReplicas must not exceed maxReplicas"#),
        "{message}"
    );
    assert!(
        message.contains("spec.groups: Forbidden: no empty names in 1 groups"),
        "{message}"
    );

    // The transition rule runs on updates only.
    let spec = json!({"minReplicas": 1, "maxReplicas": 2, "mode": "fast"});
    scalers
        .create(&PostParams::default(), &object("Scaler", "a", spec))
        .await
        .unwrap();
    let patch = |mode: &str| Patch::Merge(json!({"spec": {"mode": mode, "maxReplicas": 3}}));
    scalers
        .patch("a", &PatchParams::default(), &patch("fast"))
        .await
        .unwrap();
    let (code, _, message) = refused(
        scalers
            .patch("a", &PatchParams::default(), &patch("slow"))
            .await,
    );
    assert_eq!(code, 422);
    assert!(
        message.contains(r#"spec.mode: Invalid value: "string": mode is immutable"#),
        "{message}"
    );
}
