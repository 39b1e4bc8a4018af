//! Keeps the routing and certificate tables in step with the cluster:
//! watchers of Ingresses, IngressClasses, Services, EndpointSlices and TLS
//! Secrets (as ingress-nginx's informers) feed one [`Cluster`]; a change
//! that can affect routing wakes the rebuild loop, which builds new
//! tables, swaps them in, and sets `status.loadBalancer` of the served
//! Ingresses to the node's address.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressClass, IngressClassSpec, IngressLoadBalancerIngress,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::routes::Routes;
use crate::state::{Classes, Cluster, DEFAULT_CLASS_ANNOTATION, Key};
use crate::tls::CertResolver;

/// How many kinds are watched; the first build waits for all their lists.
const KINDS: usize = 5;

struct Shared {
    cluster: Mutex<Cluster>,
    wake: tokio::sync::Notify,
    listed: AtomicUsize,
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut Cluster) -> T) -> T {
        let mut c = self.cluster.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c)
    }
}

async fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    shared: Arc<Shared>,
    apply: fn(&mut Cluster, K) -> bool,
    delete: fn(&mut Cluster, &K) -> bool,
    replace: fn(&mut Cluster, Vec<K>) -> bool,
) where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let kind = K::kind(&Default::default()).to_string();
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut relist: Vec<K> = Vec::new();
    let mut listed = false;
    while let Some(event) = stream.next().await {
        let changed = match event {
            Ok(Event::Apply(o)) => shared.with(|c| apply(c, o)),
            Ok(Event::Delete(o)) => shared.with(|c| delete(c, &o)),
            Ok(Event::Init) => {
                relist.clear();
                false
            }
            Ok(Event::InitApply(o)) => {
                relist.push(o);
                false
            }
            Ok(Event::InitDone) => {
                let all = std::mem::take(&mut relist);
                tracing::debug!(%kind, count = all.len(), "listed");
                let changed = shared.with(|c| replace(c, all));
                if !listed {
                    listed = true;
                    shared.listed.fetch_add(1, Ordering::SeqCst);
                }
                changed
            }
            Err(e) => {
                tracing::warn!(%kind, error = %e, "ingress controller watch failed");
                false
            }
        };
        if changed {
            shared.wake.notify_one();
        }
    }
}

/// Creates IngressClass `classes.class_name` for our controller, marked
/// as the default class, unless one of that name exists (which is left
/// as it is: an administrator may have changed it).
pub async fn ensure_class(client: kube::Client, classes: &Classes) -> Result<(), kube::Error> {
    let api: Api<IngressClass> = Api::all(client);
    let class = IngressClass {
        metadata: ObjectMeta {
            name: Some(classes.class_name.clone()),
            annotations: Some(BTreeMap::from([(
                DEFAULT_CLASS_ANNOTATION.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some(classes.controller.clone()),
            parameters: None,
        }),
    };
    match api.create(&PostParams::default(), &class).await {
        Ok(_) => {
            tracing::info!(class = %classes.class_name, "created the default IngressClass");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// What `status.loadBalancer.ingress` of a served Ingress should be.
fn desired_status(address: &str) -> Vec<IngressLoadBalancerIngress> {
    let entry = match address.parse::<IpAddr>() {
        Ok(ip) => IngressLoadBalancerIngress {
            ip: Some(ip.to_string()),
            ..Default::default()
        },
        Err(_) => IngressLoadBalancerIngress {
            hostname: Some(address.to_string()),
            ..Default::default()
        },
    };
    vec![entry]
}

fn current_status(ing: &Ingress) -> Vec<IngressLoadBalancerIngress> {
    ing.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone())
        .unwrap_or_default()
}

/// Watches the cluster and keeps `routes` and `certs` current until
/// dropped; with `status_address`, sets the served Ingresses' status.
pub async fn run(
    client: kube::Client,
    classes: Classes,
    status_address: Option<String>,
    routes: Arc<Routes>,
    certs: Arc<CertResolver>,
) {
    let shared = Arc::new(Shared {
        cluster: Mutex::new(Cluster::default()),
        wake: tokio::sync::Notify::new(),
        listed: AtomicUsize::new(0),
    });
    let all = watcher::Config::default;
    let watchers = futures::future::join5(
        watch_kind::<Ingress>(
            Api::all(client.clone()),
            all(),
            shared.clone(),
            Cluster::apply_ingress,
            Cluster::delete_ingress,
            Cluster::replace_ingresses,
        ),
        watch_kind::<IngressClass>(
            Api::all(client.clone()),
            all(),
            shared.clone(),
            Cluster::apply_class,
            Cluster::delete_class,
            Cluster::replace_classes,
        ),
        watch_kind::<Service>(
            Api::all(client.clone()),
            all(),
            shared.clone(),
            Cluster::apply_service,
            Cluster::delete_service,
            Cluster::replace_services,
        ),
        watch_kind::<EndpointSlice>(
            Api::all(client.clone()),
            all(),
            shared.clone(),
            Cluster::apply_slice,
            Cluster::delete_slice,
            Cluster::replace_slices,
        ),
        watch_kind::<Secret>(
            Api::all(client.clone()),
            all().fields("type=kubernetes.io/tls"),
            shared.clone(),
            Cluster::apply_secret,
            Cluster::delete_secret,
            Cluster::replace_secrets,
        ),
    );
    let rebuild = async {
        loop {
            shared.wake.notified().await;
            if shared.listed.load(Ordering::SeqCst) < KINDS {
                continue;
            }
            let started = std::time::Instant::now();
            let (built, statuses) = shared.with(|c| {
                let built = c.build(&classes);
                let statuses: Vec<(Key, Vec<IngressLoadBalancerIngress>)> = built
                    .served
                    .iter()
                    .filter_map(|k| c.ingress(k).map(|i| (k.clone(), current_status(i))))
                    .collect();
                (built, statuses)
            });
            let (ingresses, hosts, certificates) = (
                built.served.len(),
                built.table.host_count(),
                built.certs.len(),
            );
            routes.store(Arc::new(built.table));
            certs.store(Arc::new(built.certs));
            tracing::debug!(ingresses, hosts, certificates, took = ?started.elapsed(), "ingress routes reloaded");
            let Some(address) = status_address.as_deref() else {
                continue;
            };
            let want = desired_status(address);
            let mut failed = false;
            for ((ns, name), current) in statuses {
                if current == want {
                    continue;
                }
                let api: Api<Ingress> = Api::namespaced(client.clone(), &ns);
                let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": want}}});
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::debug!(ingress = %format!("{ns}/{name}"), "status.loadBalancer set")
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(ingress = %format!("{ns}/{name}"), error = %e, "setting ingress status failed");
                        failed = true;
                    }
                }
            }
            if failed {
                let shared = shared.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    shared.wake.notify_one();
                });
            }
        }
    };
    futures::join!(watchers, rebuild);
}
