//! Protobuf on the wire, both ways, against the in-process API server with
//! a raw HTTP client: create, get, list, update, delete and watch with
//! `application/vnd.kubernetes.protobuf` bodies and responses (what
//! client-go's typed clients negotiate), errors as protobuf Status, 406 for
//! what cannot be served, and the bytes of a known object checked against
//! an independent encoder (prost).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::AsyncReadExt;
use serde_json::{Value, json};
use skiff_api::protobuf;
use skiff_testsupport::TestServer;

/// What client-go's typed clients send.
const ACCEPT_PB: &str = "application/vnd.kubernetes.protobuf, application/json";
const PB: &str = "application/vnd.kubernetes.protobuf";

struct Reply {
    status: u16,
    content_type: String,
    body: Bytes,
}

async fn call(
    s: &TestServer,
    method: &str,
    path: &str,
    accept: &str,
    body: Option<(&str, Vec<u8>)>,
) -> Reply {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::ACCEPT, accept);
    let payload = match body {
        Some((content_type, b)) => {
            req = req.header(http::header::CONTENT_TYPE, content_type);
            b
        }
        None => Vec::new(),
    };
    let resp = s
        .client
        .send(req.body(kube::client::Body::from(payload)).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.into_body().collect_bytes().await.unwrap();
    Reply {
        status,
        content_type,
        body,
    }
}

fn pb(r: &Reply) -> Value {
    assert_eq!(r.content_type, PB, "status {}", r.status);
    protobuf::decode(&r.body).unwrap()
}

fn json_of(r: &Reply) -> Value {
    assert_eq!(r.content_type, "application/json", "status {}", r.status);
    serde_json::from_slice(&r.body).unwrap()
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn crud_in_protobuf() {
    let s = TestServer::start().await;

    // Create: protobuf body, protobuf answer.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pb", "labels": {"app": "web"}}, "data": {"a": "1", "b": ""}});
    let created = call(
        &s,
        "POST",
        CMS,
        ACCEPT_PB,
        Some((PB, protobuf::encode(&cm).unwrap())),
    )
    .await;
    assert_eq!(created.status, 201);
    let created = pb(&created);
    assert_eq!(created["kind"], "ConfigMap");
    assert_eq!(created["data"], json!({"a": "1", "b": ""}));
    assert!(
        created["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );

    // Get: the same object in both encodings.
    let got_pb = call(&s, "GET", &format!("{CMS}/pb"), ACCEPT_PB, None).await;
    let got_json = json_of(&call(&s, "GET", &format!("{CMS}/pb"), "application/json", None).await);
    assert_eq!(got_pb.status, 200);
    assert_eq!(pb(&got_pb), got_json);
    // ... byte for byte what an independent encoder (prost) writes for it.
    assert_eq!(got_pb.body.as_ref(), prost_config_map(&got_json).as_slice());

    // Update with a protobuf body.
    let mut update = got_json.clone();
    update["data"]["c"] = json!("3");
    let updated = call(
        &s,
        "PUT",
        &format!("{CMS}/pb"),
        ACCEPT_PB,
        Some((PB, protobuf::encode(&update).unwrap())),
    )
    .await;
    assert_eq!(updated.status, 200);
    assert_eq!(pb(&updated)["data"]["c"], "3");

    // List: a ConfigMapList with ListMeta, items as in JSON.
    call(
        &s,
        "POST",
        CMS,
        ACCEPT_PB,
        Some((
            PB,
            protobuf::encode(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pb2"}}),
            )
            .unwrap(),
        )),
    )
    .await;
    let list_pb = pb(&call(&s, "GET", CMS, ACCEPT_PB, None).await);
    let list_json = json_of(&call(&s, "GET", CMS, "application/json", None).await);
    assert_eq!(list_pb["kind"], "ConfigMapList");
    assert_eq!(list_pb["apiVersion"], "v1");
    // Items carry no apiVersion/kind in protobuf (a list's items are bare
    // messages, as kube-apiserver's typed lists have them).
    let mut items_json = list_json["items"].clone();
    for item in items_json.as_array_mut().unwrap() {
        let item = item.as_object_mut().unwrap();
        item.remove("apiVersion");
        item.remove("kind");
    }
    assert_eq!(list_pb["items"], items_json);
    assert_eq!(list_pb["items"].as_array().unwrap().len(), 2);
    assert!(
        list_pb["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| !rv.is_empty())
    );
    // A second list copies the cached encodings: the same bytes.
    let again = call(&s, "GET", CMS, ACCEPT_PB, None).await;
    assert_eq!(pb(&again), list_pb);
    // Paging: the continue token travels in ListMeta.
    let page = pb(&call(&s, "GET", &format!("{CMS}?limit=1"), ACCEPT_PB, None).await);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let next = pb(&call(
        &s,
        "GET",
        &format!("{CMS}?limit=1&continue={token}"),
        ACCEPT_PB,
        None,
    )
    .await);
    assert_eq!(next["items"][0]["metadata"]["name"], "pb2");

    // Metadata-only lists in protobuf (client-go's metadata client).
    let meta = pb(&call(
        &s,
        "GET",
        CMS,
        "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
        None,
    )
    .await);
    assert_eq!(meta["kind"], "PartialObjectMetadataList");
    assert_eq!(meta["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(
        meta["items"][0]["metadata"]["labels"],
        json!({"app": "web"})
    );
    assert!(meta["items"][0].get("data").is_none());

    // Table stays JSON: kubectl's Accept is answered as before.
    let table = call(
        &s,
        "GET",
        CMS,
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        None,
    )
    .await;
    assert_eq!(json_of(&table)["kind"], "Table");

    // Errors are protobuf Status objects when protobuf was negotiated.
    let missing = call(&s, "GET", &format!("{CMS}/nope"), ACCEPT_PB, None).await;
    assert_eq!(missing.status, 404);
    let status = pb(&missing);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["apiVersion"], "v1");
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["code"], 404);
    assert_eq!(status["message"], "configmaps \"nope\" not found");
    let exists = call(
        &s,
        "POST",
        CMS,
        ACCEPT_PB,
        Some((PB, protobuf::encode(&cm).unwrap())),
    )
    .await;
    assert_eq!(exists.status, 409);
    assert_eq!(pb(&exists)["reason"], "AlreadyExists");

    // Nothing acceptable: 406 (in JSON, as kube-apiserver).
    let refused = call(&s, "GET", CMS, "text/html", None).await;
    assert_eq!(refused.status, 406);
    assert_eq!(json_of(&refused)["reason"], "NotAcceptable");

    // Delete: the answer in protobuf. (DeleteOptions bodies are read as
    // JSON by handlers::delete_options; protobuf ones are not covered here.)
    let opts = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
    let deleted = call(
        &s,
        "DELETE",
        &format!("{CMS}/pb"),
        ACCEPT_PB,
        Some(("application/json", serde_json::to_vec(&opts).unwrap())),
    )
    .await;
    assert_eq!(deleted.status, 200);
    let deleted = pb(&deleted);
    assert_eq!(deleted["kind"], "Status");
    assert_eq!(deleted["status"], "Success");
    assert_eq!(deleted["details"]["name"], "pb");
    assert_eq!(
        call(&s, "GET", &format!("{CMS}/pb"), ACCEPT_PB, None)
            .await
            .status,
        404
    );

    // Pods (a kind whose delete answers with the object) in protobuf too.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}],
            "resources": {"limits": {"cpu": "100m"}}, "readinessProbe": {"httpGet": {"port": 80}}}]}});
    let pods = "/api/v1/namespaces/default/pods";
    let created = call(
        &s,
        "POST",
        pods,
        ACCEPT_PB,
        Some((PB, protobuf::encode(&pod).unwrap())),
    )
    .await;
    assert_eq!(created.status, 201);
    let got_json = json_of(&call(&s, "GET", &format!("{pods}/p"), "application/json", None).await);
    assert_eq!(
        pb(&call(&s, "GET", &format!("{pods}/p"), ACCEPT_PB, None).await),
        got_json
    );
    assert_eq!(
        got_json["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
        80
    );
    let gone = call(
        &s,
        "DELETE",
        &format!("{pods}/p?gracePeriodSeconds=0"),
        ACCEPT_PB,
        None,
    )
    .await;
    assert_eq!(gone.status, 200);
    assert_eq!(pb(&gone)["kind"], "Pod");
}

/// Reads length-delimited protobuf watch frames from a streaming body.
struct Frames(std::pin::Pin<Box<dyn futures::AsyncBufRead + Send>>);

impl Frames {
    async fn open(s: &TestServer, path: &str, accept: &str) -> Frames {
        let req = http::Request::get(path)
            .header(http::header::ACCEPT, accept)
            .body(Vec::new())
            .unwrap();
        Frames(Box::pin(s.client.request_stream(req).await.unwrap()))
    }

    /// The next event: (type, object).
    async fn next(&mut self) -> (String, Value) {
        let read = async {
            let mut len = [0u8; 4];
            self.0.read_exact(&mut len).await.unwrap();
            let mut msg = vec![0u8; u32::from_be_bytes(len) as usize];
            self.0.read_exact(&mut msg).await.unwrap();
            // The event is the raw WatchEvent message: no `k8s\0` envelope
            // around it; its object is a full protobuf body.
            assert!(!msg.starts_with(b"k8s\0"));
            protobuf::decode_watch_event(&msg).unwrap()
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), read)
            .await
            .expect("a watch event")
    }
}

#[tokio::test]
async fn watch_in_protobuf() {
    let s = TestServer::start().await;
    // The response's media type, as kube-apiserver's.
    let req = http::Request::get(format!("{CMS}?watch=true&timeoutSeconds=1"))
        .header(http::header::ACCEPT, ACCEPT_PB)
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = s.client.send(req).await.unwrap();
    assert_eq!(
        resp.headers()[http::header::CONTENT_TYPE],
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    drop(resp);

    let list = pb(&call(&s, "GET", CMS, ACCEPT_PB, None).await);
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for accept in [
        ACCEPT_PB,
        "application/vnd.kubernetes.protobuf;stream=watch",
    ] {
        let now = pb(&call(&s, "GET", CMS, ACCEPT_PB, None).await);
        let now = now["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let mut w = Frames::open(
            &s,
            &format!("{CMS}?watch=true&resourceVersion={now}"),
            accept,
        )
        .await;
        let name = if accept == ACCEPT_PB { "w1" } else { "w2" };
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}});
        let created = call(
            &s,
            "POST",
            CMS,
            ACCEPT_PB,
            Some((PB, protobuf::encode(&cm).unwrap())),
        )
        .await;
        assert_eq!(created.status, 201);
        let (t, obj) = w.next().await;
        assert_eq!(t, "ADDED");
        assert_eq!(obj, pb(&created));
        let mut upd = pb(&created);
        upd["data"]["k"] = json!("w");
        let updated = call(
            &s,
            "PUT",
            &format!("{CMS}/{name}"),
            ACCEPT_PB,
            Some((PB, protobuf::encode(&upd).unwrap())),
        )
        .await;
        let (t, obj) = w.next().await;
        assert_eq!(t, "MODIFIED");
        assert_eq!(obj, pb(&updated));
        assert_eq!(obj["data"]["k"], "w");
        call(&s, "DELETE", &format!("{CMS}/{name}"), ACCEPT_PB, None).await;
        let (t, obj) = w.next().await;
        assert_eq!(t, "DELETED");
        assert_eq!(obj["metadata"]["name"], name);
    }

    // The initial-events-end bookmark, in protobuf: the kind with only
    // metadata (resourceVersion and the annotation).
    let mut w = Frames::open(
        &s,
        &format!("{CMS}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion={rv}"),
        ACCEPT_PB,
    )
    .await;
    let (t, obj) = w.next().await;
    assert_eq!(t, "BOOKMARK");
    assert_eq!(obj["kind"], "ConfigMap");
    assert_eq!(
        obj["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert!(
        obj["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );

    // Metadata-only watches in protobuf.
    let mut w = Frames::open(
        &s,
        &format!("{CMS}?watch=true&resourceVersion={rv}"),
        "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
    )
    .await;
    let (t, obj) = w.next().await;
    assert_eq!(t, "ADDED");
    assert_eq!(obj["kind"], "PartialObjectMetadata");
    assert_eq!(obj["metadata"]["name"], "w1");

    // YAML has no watch stream: 406.
    let refused = call(
        &s,
        "GET",
        &format!("{CMS}?watch=true"),
        "application/yaml",
        None,
    )
    .await;
    assert_eq!(refused.status, 406);
}

/// A watch from a resourceVersion older than the watch cache's history
/// (here 2 events) gets one ERROR event carrying a protobuf 410 Status.
#[tokio::test]
async fn watch_error_in_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    let store = skiff_store_sqlite::SqliteStore::open(&dir.path().join("state.db")).unwrap();
    let mut config =
        skiff_apiserver::Config::new(dir.path().to_path_buf(), std::sync::Arc::new(store));
    config.bind_address = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    config.port = 0;
    config.watch_history.events = 2;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (running, _handle) = skiff_apiserver::start(config, async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let kc = kube::config::Kubeconfig::read_from(&running.kubeconfig_path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), "default");
    for i in 0..4 {
        let cm = serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}})).unwrap();
        cms.create(&Default::default(), &cm).await.unwrap();
    }
    let req = http::Request::get(format!("{CMS}?watch=true&resourceVersion=1"))
        .header(http::header::ACCEPT, ACCEPT_PB)
        .body(Vec::new())
        .unwrap();
    let mut w = Frames(Box::pin(client.request_stream(req).await.unwrap()));
    let (t, obj) = w.next().await;
    assert_eq!(t, "ERROR");
    assert_eq!(obj["kind"], "Status");
    assert_eq!(obj["code"], 410);
    assert_eq!(obj["reason"], "Expired");
    drop(stop);
}

/// The ConfigMap's protobuf body written by prost from message definitions
/// taken from the upstream generated.proto files (k8s.io/api/core/v1,
/// k8s.io/apimachinery/pkg/apis/meta/v1, k8s.io/apimachinery/pkg/runtime).
fn prost_config_map(v: &Value) -> Vec<u8> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Unknown {
        #[prost(message, optional, tag = "1")]
        type_meta: Option<TypeMeta>,
        #[prost(bytes = "vec", optional, tag = "2")]
        raw: Option<Vec<u8>>,
        #[prost(string, optional, tag = "3")]
        content_encoding: Option<String>,
        #[prost(string, optional, tag = "4")]
        content_type: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct TypeMeta {
        #[prost(string, optional, tag = "1")]
        api_version: Option<String>,
        #[prost(string, optional, tag = "2")]
        kind: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Time {
        #[prost(int64, optional, tag = "1")]
        seconds: Option<i64>,
        #[prost(int32, optional, tag = "2")]
        nanos: Option<i32>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct FieldsV1 {
        #[prost(bytes = "vec", optional, tag = "1")]
        raw: Option<Vec<u8>>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct ManagedFieldsEntry {
        #[prost(string, optional, tag = "1")]
        manager: Option<String>,
        #[prost(string, optional, tag = "2")]
        operation: Option<String>,
        #[prost(string, optional, tag = "3")]
        api_version: Option<String>,
        #[prost(message, optional, tag = "4")]
        time: Option<Time>,
        #[prost(string, optional, tag = "6")]
        fields_type: Option<String>,
        #[prost(message, optional, tag = "7")]
        fields_v1: Option<FieldsV1>,
        #[prost(string, optional, tag = "8")]
        subresource: Option<String>,
    }
    /// A `map<string, string>` entry as Go writes it: key and value both
    /// present, even when empty (prost's own maps leave an empty value out).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Entry {
        #[prost(string, optional, tag = "1")]
        key: Option<String>,
        #[prost(string, optional, tag = "2")]
        value: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct ObjectMeta {
        #[prost(string, optional, tag = "1")]
        name: Option<String>,
        #[prost(string, optional, tag = "3")]
        namespace: Option<String>,
        #[prost(string, optional, tag = "5")]
        uid: Option<String>,
        #[prost(string, optional, tag = "6")]
        resource_version: Option<String>,
        #[prost(message, optional, tag = "8")]
        creation_timestamp: Option<Time>,
        #[prost(message, repeated, tag = "11")]
        labels: Vec<Entry>,
        #[prost(message, repeated, tag = "17")]
        managed_fields: Vec<ManagedFieldsEntry>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct ConfigMap {
        #[prost(message, optional, tag = "1")]
        metadata: Option<ObjectMeta>,
        #[prost(message, repeated, tag = "2")]
        data: Vec<Entry>,
    }

    let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let time = |p: &str| {
        s(p).map(|t| Time {
            seconds: Some(t.parse::<jiff::Timestamp>().unwrap().as_second()),
            nanos: Some(0),
        })
    };
    // Sorted by key, as Go's generated marshallers write maps.
    let map = |p: &str| -> Vec<Entry> {
        let sorted: BTreeMap<&String, &Value> = v
            .pointer(p)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .collect();
        sorted
            .into_iter()
            .map(|(k, v)| Entry {
                key: Some(k.clone()),
                value: Some(v.as_str().unwrap().to_string()),
            })
            .collect()
    };
    let known = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "labels",
        "managedFields",
    ];
    for k in v["metadata"].as_object().unwrap().keys() {
        assert!(
            known.contains(&k.as_str()),
            "metadata.{k} not in the prost ConfigMap"
        );
    }
    let managed_fields = v["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, _)| {
            let p = |f: &str| format!("/metadata/managedFields/{i}/{f}");
            ManagedFieldsEntry {
                manager: s(&p("manager")),
                operation: s(&p("operation")),
                api_version: s(&p("apiVersion")),
                time: time(&p("time")),
                fields_type: s(&p("fieldsType")),
                fields_v1: v.pointer(&p("fieldsV1")).map(|f| FieldsV1 {
                    raw: Some(serde_json::to_vec(f).unwrap()),
                }),
                subresource: s(&p("subresource")),
            }
        })
        .collect();
    let cm = ConfigMap {
        metadata: Some(ObjectMeta {
            name: s("/metadata/name"),
            namespace: s("/metadata/namespace"),
            uid: s("/metadata/uid"),
            resource_version: s("/metadata/resourceVersion"),
            creation_timestamp: time("/metadata/creationTimestamp"),
            labels: map("/metadata/labels"),
            managed_fields,
        }),
        data: map("/data"),
    };
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
        }),
        raw: Some(prost::Message::encode_to_vec(&cm)),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(prost::Message::encode_to_vec(&unknown));
    out
}
