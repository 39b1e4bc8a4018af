//! Static pods (↔ pkg/kubelet/config/file.go + the mirror pod manager):
//! Pod manifests in a directory on the node (`<data-dir>/agent/pod-manifests`,
//! as k3s's `agent/pod-manifests`) become mirror pods in the API, bound to
//! this node and named `<name>-<node>`, which the pod workers then run like
//! any other pod bound here. A changed file replaces its mirror pod; a
//! removed file deletes it; a mirror pod deleted through the API comes back.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use sha2::{Digest, Sha256};

/// How often the manifest directory is read (the kubelet's fileCheckFrequency is 20 s).
pub const SCAN_PERIOD: Duration = Duration::from_secs(10);
pub const SOURCE: &str = "kubernetes.io/config.source";
pub const HASH: &str = "kubernetes.io/config.hash";
pub const MIRROR: &str = "kubernetes.io/config.mirror";

#[derive(Debug, thiserror::Error)]
pub enum StaticPodError {
    #[error("{path}: {message}")]
    Manifest { path: String, message: String },
}

/// One manifest, as the mirror pod to create.
#[derive(Debug, Clone)]
pub struct StaticPod {
    pub file: String,
    pub pod: Pod,
    pub hash: String,
}

impl StaticPod {
    pub fn namespace(&self) -> String {
        self.pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    }

    pub fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }
}

/// Parse a manifest (YAML or JSON) into the mirror pod for `node`.
pub fn parse(file: &str, text: &str, node: &str) -> Result<StaticPod, StaticPodError> {
    let err = |message: String| StaticPodError::Manifest {
        path: file.into(),
        message,
    };
    let value: serde_json::Value = serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?;
    if value.get("kind").and_then(|k| k.as_str()) != Some("Pod") {
        return Err(err("not a Pod manifest (kind: Pod)".into()));
    }
    let mut pod: Pod = serde_json::from_value(value).map_err(|e| err(e.to_string()))?;
    let base = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| err("metadata.name is required".into()))?;
    let hash = format!("{:x}", Sha256::digest(text.as_bytes()))[..32].to_string();
    pod.metadata.name = Some(format!("{base}-{node}"));
    pod.metadata.namespace = Some(
        pod.metadata
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
    );
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(SOURCE.into(), "file".into());
    annotations.insert(HASH.into(), hash.clone());
    annotations.insert(MIRROR.into(), hash.clone());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node.to_string());
    pod.status = None;
    Ok(StaticPod {
        file: file.into(),
        pod,
        hash,
    })
}

/// Every manifest in `dir` (*.yaml, *.yml, *.json; hidden files skipped).
/// Bad manifests are logged and left out.
pub fn read_dir(dir: &Path, node: &str) -> Vec<StaticPod> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut pods = Vec::new();
    let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    names.sort();
    for path in names {
        let file = path.display().to_string();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if hidden || !["yaml", "yml", "json"].contains(&ext) {
            continue;
        }
        match std::fs::read_to_string(&path)
            .map_err(|e| StaticPodError::Manifest {
                path: file.clone(),
                message: e.to_string(),
            })
            .and_then(|t| parse(&file, &t, node))
        {
            Ok(p) => pods.push(p),
            Err(e) => tracing::warn!(error = %e, "skipping a static pod manifest"),
        }
    }
    pods
}

fn mirror_hash(p: &Pod) -> Option<&str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(MIRROR)
        .map(String::as_str)
}

/// Bring the API's mirror pods of this node in line with `wanted`.
pub async fn sync(
    client: &kube::Client,
    node: &str,
    wanted: &[StaticPod],
) -> Result<(), kube::Error> {
    let all: Api<Pod> = Api::all(client.clone());
    let existing = all
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let mut mirrors: HashMap<(String, String), Pod> = existing
        .items
        .into_iter()
        .filter(|p| mirror_hash(p).is_some())
        .map(|p| {
            (
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                ),
                p,
            )
        })
        .collect();
    let owner = Api::<Node>::all(client.clone()).get_opt(node).await?;
    for sp in wanted {
        let key = (sp.namespace(), sp.name());
        let api: Api<Pod> = Api::namespaced(client.clone(), &key.0);
        match mirrors.remove(&key) {
            Some(p)
                if mirror_hash(&p) == Some(sp.hash.as_str())
                    && p.metadata.deletion_timestamp.is_none() =>
            {
                continue;
            }
            Some(p) if p.metadata.deletion_timestamp.is_some() => continue, // going away; recreated next round
            Some(_) => {
                tracing::info!(pod = %key.1, file = %sp.file, "static pod manifest changed: replacing its mirror pod");
                api.delete(&key.1, &DeleteParams::default()).await?;
                continue;
            }
            None => {}
        }
        let mut pod = sp.pod.clone();
        if let Some(n) = &owner {
            pod.metadata.owner_references = Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.into(),
                    uid: n.metadata.uid.clone().unwrap_or_default(),
                    controller: Some(true),
                    ..Default::default()
                },
            ]);
        }
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                tracing::info!(pod = %key.1, namespace = %key.0, file = %sp.file, "mirror pod created for a static pod")
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => tracing::warn!(error = %e, pod = %key.1, "creating a mirror pod failed"),
        }
    }
    // Mirror pods whose manifest is gone.
    for ((ns, name), p) in mirrors {
        if p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE))
            .map(String::as_str)
            == Some("file")
            && p.metadata.deletion_timestamp.is_none()
        {
            tracing::info!(pod = %name, "static pod manifest removed: deleting its mirror pod");
            Api::<Pod>::namespaced(client.clone(), &ns)
                .delete(&name, &DeleteParams::default())
                .await?;
        }
    }
    Ok(())
}

/// Watch `dir` forever (a scan every [`SCAN_PERIOD`]).
pub async fn run(client: kube::Client, node: String, dir: std::path::PathBuf) {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(error = %e, dir = %dir.display(), "static pods disabled: cannot create the manifest directory");
        return;
    }
    let mut tick = tokio::time::interval(SCAN_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let wanted = read_dir(&dir, &node);
        if let Err(e) = sync(&client, &node, &wanted).await {
            tracing::warn!(error = %e, "syncing static pods failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: kube-system\nspec:\n  containers:\n  - name: c\n    image: busybox:skiff\n";

    #[test]
    fn manifests_become_mirror_pods_bound_to_the_node() {
        let sp = parse("/m/web.yaml", MANIFEST, "node-1").unwrap();
        assert_eq!(sp.name(), "web-node-1");
        assert_eq!(sp.namespace(), "kube-system");
        assert_eq!(
            sp.pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some("node-1")
        );
        let a = sp.pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[SOURCE], "file");
        assert_eq!(a[MIRROR], sp.hash);
        let changed = parse(
            "/m/web.yaml",
            &MANIFEST.replace("busybox:skiff", "busybox:other"),
            "node-1",
        )
        .unwrap();
        assert_ne!(changed.hash, sp.hash);
        assert!(parse("/m/x.yaml", "kind: Service\nmetadata: {name: x}\n", "n").is_err());
        assert!(parse("/m/x.yaml", "kind: Pod\nmetadata: {}\n", "n").is_err());
        assert!(parse("/m/x.yaml", "{not yaml", "n").is_err());
    }

    #[tokio::test]
    async fn mirror_pods_follow_the_manifest_directory() {
        let server = skiff_testsupport::TestServer::start().await;
        let client = server.client.clone();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web.yaml"), MANIFEST).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
        sync(&client, "node-1", &read_dir(dir.path(), "node-1"))
            .await
            .unwrap();
        let p = pods.get("web-node-1").await.unwrap();
        let first_uid = p.metadata.uid.clone();
        assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("node-1"));
        // Unchanged: left alone.
        sync(&client, "node-1", &read_dir(dir.path(), "node-1"))
            .await
            .unwrap();
        assert_eq!(
            pods.get("web-node-1").await.unwrap().metadata.uid,
            first_uid
        );
        // Deleted through the API: it comes back.
        pods.delete("web-node-1", &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
        skiff_testsupport::eventually("the mirror pod gone", || async {
            pods.get_opt("web-node-1")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
        sync(&client, "node-1", &read_dir(dir.path(), "node-1"))
            .await
            .unwrap();
        assert!(pods.get_opt("web-node-1").await.unwrap().is_some());
        // The file removed: the mirror pod is deleted.
        std::fs::remove_file(dir.path().join("web.yaml")).unwrap();
        sync(&client, "node-1", &read_dir(dir.path(), "node-1"))
            .await
            .unwrap();
        let left = pods.get_opt("web-node-1").await.unwrap();
        assert!(left.is_none() || left.unwrap().metadata.deletion_timestamp.is_some());
    }
}
