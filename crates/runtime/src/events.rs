//! An Event recorder writing core/v1 Events (what `kubectl describe` lists),
//! aggregating repeats of the same event into a count, as client-go's
//! record package does.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use kube::api::{Api, Patch, PatchParams, PostParams};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

const MAX_TRACKED: usize = 4096;

pub struct Recorder {
    client: kube::Client,
    component: String,
    host: Option<String>,
    seen: Mutex<HashMap<String, (String, String, i32)>>,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &str, host: Option<&str>) -> Recorder {
        Recorder {
            client,
            component: component.into(),
            host: host.map(str::to_string),
            seen: Mutex::default(),
        }
    }

    /// Record an event about `object`. Failures are logged, never returned:
    /// events are best effort, as in Kubernetes.
    pub async fn record(
        &self,
        object: &ObjectReference,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        let namespace = object
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let key = format!(
            "{}/{}/{}/{}/{}",
            object.uid.as_deref().unwrap_or_default(),
            object.name.as_deref().unwrap_or_default(),
            kind.as_str(),
            reason,
            message
        );
        let repeat = self.seen.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some((ns, name, count)) = repeat {
            let patch = serde_json::json!({"count": count + 1, "lastTimestamp": crate::now_time()});
            let ns_api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
            if ns_api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                if let Ok(mut m) = self.seen.lock() {
                    m.insert(key, (ns, name, count + 1));
                }
                return;
            }
        }
        let nanos = jiff::Timestamp::now().as_nanosecond();
        let name = format!("{}.{:x}", object.name.as_deref().unwrap_or("object"), nanos);
        let now = crate::now_time();
        let event = Event {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(kind.as_str().into()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                if let Ok(mut m) = self.seen.lock() {
                    if m.len() >= MAX_TRACKED {
                        m.clear();
                    }
                    m.insert(key, (namespace, name, 1));
                }
            }
            Err(e) => tracing::debug!(error = %e, reason, "could not record event"),
        }
    }
}

/// An ObjectReference to a typed object.
pub fn reference<K>(obj: &K) -> ObjectReference
where
    K: kube::Resource<DynamicType = ()>,
{
    let meta = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}
