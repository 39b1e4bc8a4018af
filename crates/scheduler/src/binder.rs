//! Binding (↔ the DefaultBinder plugin): POST pods/{name}/binding with a
//! core/v1 Binding naming the node; the API server sets spec.nodeName and
//! the PodScheduled condition.

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{Api, ObjectMeta, PostParams};

use crate::cache::PodInfo;

/// Bind the pod to the node.
pub async fn bind(client: &kube::Client, pod: &PodInfo, node: &str) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..Default::default()
        },
    };
    let _: serde_json::Value = api
        .create_subresource("binding", &pod.name, &PostParams::default(), &binding)
        .await?;
    Ok(())
}
