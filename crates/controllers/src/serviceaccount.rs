//! The service account controller and the root CA publisher (↔
//! pkg/controller/serviceaccount and
//! pkg/controller/certificates/rootcacertpublisher): every namespace that is
//! not terminating has a ServiceAccount "default" (recreated when deleted)
//! and a ConfigMap "kube-root-ca.crt" whose "ca.crt" is the cluster CA.
//!
//! The CA comes from the client configuration. A `kube::Client` does not
//! expose its configuration, so `run` infers one (`KUBECONFIG`,
//! `~/.kube/config`, in-cluster) and uses its CA only when it reaches the
//! same cluster (same kube-system UID); whoever built the client from a
//! kubeconfig should rather call `run_with_root_ca` with
//! `root_ca_from_kubeconfig`. Without a CA the ConfigMaps are not published
//! (and a warning says so).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::loopkit::Store;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::loopkit::{self, Error, Outcome, WorkQueue, informer, is_status};

pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
pub const ROOT_CA_KEY: &str = "ca.crt";
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";
const CONTROLLER: &str = "serviceaccount";

/// Run with the CA inferred from the environment (see the module docs).
pub async fn run(ctx: crate::Context) {
    let ca = discover_root_ca(&ctx.client).await;
    run_with_root_ca(ctx, ca).await
}

/// Run, publishing `root_ca` (PEM) as kube-root-ca.crt; `None` publishes no ConfigMaps.
pub async fn run_with_root_ca(ctx: crate::Context, root_ca: Option<String>) {
    if root_ca.is_none() {
        tracing::warn!(
            "no cluster CA known from the client configuration: not publishing kube-root-ca.crt ConfigMaps"
        );
    }
    let client = ctx.client.clone();
    let queue = Arc::new(WorkQueue::<String>::new());

    let q = queue.clone();
    let (namespaces, ns_informer) = ctx.informers.get::<Namespace>().informer(move |ev, _| {
        if let Some(ns) = loopkit::event_object(ev) {
            q.add(ns.metadata.name.clone().unwrap_or_default());
        }
    });
    let q = queue.clone();
    let ns_store = namespaces.clone();
    let (accounts, sa_informer) = informer(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={DEFAULT_SERVICE_ACCOUNT}")),
        move |ev, _| match ev {
            watcher::Event::InitDone => ns_store
                .state()
                .iter()
                .for_each(|ns| q.add(ns.metadata.name.clone().unwrap_or_default())),
            _ => {
                if let Some(sa) = loopkit::event_object(ev) {
                    q.add(sa.metadata.namespace.clone().unwrap_or_default());
                }
            }
        },
    );
    let q = queue.clone();
    let ns_store = namespaces.clone();
    let (configmaps, cm_informer) = informer(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_CONFIGMAP}")),
        move |ev, _| match ev {
            watcher::Event::InitDone => ns_store
                .state()
                .iter()
                .for_each(|ns| q.add(ns.metadata.name.clone().unwrap_or_default())),
            _ => {
                if let Some(cm) = loopkit::event_object(ev) {
                    q.add(cm.metadata.namespace.clone().unwrap_or_default());
                }
            }
        },
    );

    let worker = async {
        if !(loopkit::wait_ready(&namespaces).await
            && loopkit::wait_ready(&accounts).await
            && loopkit::wait_ready(&configmaps).await)
        {
            return;
        }
        let stores = Stores {
            namespaces: namespaces.clone(),
            accounts: accounts.clone(),
            configmaps: configmaps.clone(),
        };
        loop {
            let ns = queue.next().await;
            let outcome = crate::loopkit::guarded(
                CONTROLLER,
                &ns,
                reconcile(&client, &stores, root_ca.as_deref(), &ns),
            )
            .await;
            queue.finish(CONTROLLER, ns, outcome);
        }
    };
    tokio::join!(ns_informer, sa_informer, cm_informer, worker);
}

struct Stores {
    namespaces: Store<Namespace>,
    accounts: Store<ServiceAccount>,
    configmaps: Store<ConfigMap>,
}

/// A namespace gets objects created in it unless it is being deleted.
pub fn namespace_active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

/// What the root CA ConfigMap of a namespace must change to, if anything:
/// `None` when `existing` is already right.
pub fn desired_root_ca_configmap(
    namespace: &str,
    ca: &str,
    existing: Option<&ConfigMap>,
) -> Option<ConfigMap> {
    let data_ok = existing
        .and_then(|cm| cm.data.as_ref())
        .is_some_and(|d| d.len() == 1 && d.get(ROOT_CA_KEY).map(String::as_str) == Some(ca));
    let annotation_ok = existing
        .and_then(|cm| cm.metadata.annotations.as_ref())
        .is_some_and(|a| a.get(DESCRIPTION_ANNOTATION).map(String::as_str) == Some(DESCRIPTION));
    if existing.is_some() && data_ok && annotation_ok {
        return None;
    }
    let mut cm = existing.cloned().unwrap_or_else(|| ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CA_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        ..Default::default()
    });
    cm.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    cm.data = Some(BTreeMap::from([(ROOT_CA_KEY.to_string(), ca.to_string())]));
    cm.binary_data = None;
    Some(cm)
}

async fn reconcile(client: &kube::Client, stores: &Stores, ca: Option<&str>, ns: &str) -> Outcome {
    let Some(namespace) = stores.namespaces.get(&ObjectRef::new(ns)) else {
        return Ok(None);
    };
    if !namespace_active(&namespace) {
        return Ok(None);
    }
    let sa_ref = ObjectRef::<ServiceAccount>::new(DEFAULT_SERVICE_ACCOUNT).within(ns);
    if stores.accounts.get(&sa_ref).is_none() {
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT_SERVICE_ACCOUNT.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => tracing::info!(namespace = ns, "created the default service account"),
            // Already there (our cache is behind) or the namespace is going away.
            Err(e) if is_status(&e, 409) || is_status(&e, 403) || is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(ca) = ca {
        let cm_ref = ObjectRef::<ConfigMap>::new(ROOT_CA_CONFIGMAP).within(ns);
        let existing = stores.configmaps.get(&cm_ref);
        if let Some(cm) = desired_root_ca_configmap(ns, ca, existing.as_deref()) {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            let result = if existing.is_some() {
                api.replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &cm)
                    .await
                    .map(|_| ())
            } else {
                api.create(&PostParams::default(), &cm).await.map(|_| ())
            };
            match result {
                Ok(()) => tracing::info!(namespace = ns, "published {ROOT_CA_CONFIGMAP}"),
                Err(e) if is_status(&e, 403) || (existing.is_none() && is_status(&e, 409)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(None)
}

/// The CA bundle (PEM) of a kubeconfig's current cluster, if it names one.
pub async fn root_ca_from_kubeconfig(path: &Path) -> Result<Option<String>, Error> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| Error::Invalid(format!("reading {}: {e}", path.display())))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Invalid(format!("loading {}: {e}", path.display())))?;
    Ok(config
        .root_cert
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(pem_encode_certs))
}

/// The CA of the inferred client configuration, when that configuration
/// reaches the same cluster as `client` (same kube-system UID).
async fn discover_root_ca(client: &kube::Client) -> Option<String> {
    let config = match kube::Config::infer().await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "no client configuration to take the cluster CA from");
            return None;
        }
    };
    let ca = config
        .root_cert
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(pem_encode_certs)?;
    let other = kube::Client::try_from(config).ok()?;
    let uid = |c: kube::Client| async move {
        Api::<Namespace>::all(c)
            .get("kube-system")
            .await
            .ok()
            .and_then(|n| n.metadata.uid)
    };
    let (ours, theirs) = tokio::join!(uid(client.clone()), uid(other));
    match (ours, theirs) {
        (Some(a), Some(b)) if a == b => Some(ca),
        _ => {
            tracing::warn!(
                "the inferred client configuration reaches another cluster; not using its CA"
            );
            None
        }
    }
}

/// DER certificates as a PEM bundle.
pub fn pem_encode_certs(ders: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64_encode(der);
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn pem_wraps_at_64_columns() {
        let pem = pem_encode_certs(&[vec![0u8; 60]]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN CERTIFICATE-----"));
        assert_eq!(lines.get(1).map(|l| l.len()), Some(64));
        assert_eq!(lines.get(2).map(|l| l.len()), Some(16));
        assert_eq!(lines.get(3), Some(&"-----END CERTIFICATE-----"));
    }

    #[test]
    fn namespace_activity() {
        let mut ns = Namespace::default();
        assert!(namespace_active(&ns));
        ns.status = Some(NamespaceStatus {
            phase: Some("Terminating".into()),
            ..Default::default()
        });
        assert!(!namespace_active(&ns));
        let mut ns = Namespace::default();
        ns.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(!namespace_active(&ns));
    }

    #[test]
    fn root_ca_configmap_changes() {
        let created = desired_root_ca_configmap("ns", "CA1", None).expect("a new configmap");
        assert_eq!(created.metadata.name.as_deref(), Some(ROOT_CA_CONFIGMAP));
        assert_eq!(created.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(
            created
                .data
                .as_ref()
                .and_then(|d| d.get(ROOT_CA_KEY))
                .map(String::as_str),
            Some("CA1")
        );
        // Up to date: nothing to do.
        assert!(desired_root_ca_configmap("ns", "CA1", Some(&created)).is_none());
        // Rotated CA, extra keys, lost annotation: rewritten.
        let rotated = desired_root_ca_configmap("ns", "CA2", Some(&created)).expect("an update");
        assert_eq!(
            rotated
                .data
                .as_ref()
                .and_then(|d| d.get(ROOT_CA_KEY))
                .map(String::as_str),
            Some("CA2")
        );
        let mut extra = created.clone();
        extra
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert("x".into(), "y".into());
        assert_eq!(
            desired_root_ca_configmap("ns", "CA1", Some(&extra))
                .and_then(|c| c.data)
                .map(|d| d.len()),
            Some(1)
        );
        let mut bare = created.clone();
        bare.metadata.annotations = None;
        assert!(desired_root_ca_configmap("ns", "CA1", Some(&bare)).is_some());
    }
}
