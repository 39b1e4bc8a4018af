//! The controller manager (↔ kube-controller-manager): one module per
//! controller, each a `kube` client of the API server that watches what it
//! needs and writes through the API. Nothing here touches the store.
//! Kinds several controllers watch (pods, nodes, services, ...) are watched
//! once and cached once, through `Context::informers` (see [`shared`]).
//!
//! Every controller exposes `pub async fn run(ctx: Context)` that runs until
//! the future is dropped (the manager drops it when leadership is lost or
//! at shutdown).

use std::sync::Arc;

pub mod certificates;
pub mod clusterroleaggregation;
pub mod cron;
pub mod cronjob;
pub mod ctrlutil;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod endpointslicemirroring;
pub mod gc;
pub mod history;
pub mod job;
pub mod loopkit;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
pub mod serviceaccount;
pub mod servicelb;
pub mod shared;
pub mod statefulset;
pub mod tokens;
pub mod workload;

/// What every controller gets.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub recorder: Arc<skiff_runtime::events::Recorder>,
    pub config: Arc<Config>,
    /// One watch and cache per kind, shared by every controller.
    pub informers: shared::SharedInformers,
}

impl Context {
    /// A context whose events are recorded as from "controller-manager".
    pub fn new(client: kube::Client, config: Config) -> Context {
        let recorder = Arc::new(skiff_runtime::events::Recorder::new(
            client.clone(),
            "controller-manager",
            None,
        ));
        let informers = shared::SharedInformers::new(client.clone());
        Context {
            client,
            recorder,
            config: Arc::new(config),
            informers,
        }
    }
}

/// Controller manager settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cluster pod CIDR nodes get /24s from (spec.podCIDR).
    pub cluster_cidr: (std::net::Ipv4Addr, u8),
    pub node_cidr_mask: u8,
    /// A node whose Lease is not renewed for this long becomes NotReady/Unknown.
    pub node_monitor_grace_period: std::time::Duration,
    /// Terminated pods kept before pod GC deletes the oldest.
    pub terminated_pod_gc_threshold: usize,
    /// The cluster CA (PEM) published as kube-root-ca.crt in every namespace.
    pub root_ca: Option<String>,
    /// The CA the CSR signer issues from (none: approved requests wait).
    pub signing: Option<certificates::Signing>,
    /// The key service-account token Secrets are signed with
    /// (`--service-account-private-key-file`; none: they stay empty).
    pub service_account_key: Option<Arc<skiff_api::jwt::EsKey>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_cidr: (std::net::Ipv4Addr::new(10, 42, 0, 0), 16),
            node_cidr_mask: 24,
            node_monitor_grace_period: std::time::Duration::from_secs(40),
            terminated_pod_gc_threshold: 12500,
            root_ca: None,
            signing: None,
            service_account_key: None,
        }
    }
}

/// Run every controller until the future is dropped.
pub async fn run_all(ctx: Context) {
    // A fresh set of shared informers per run (leadership term), stopped with it.
    let ctx = Context {
        informers: shared::SharedInformers::new(ctx.client.clone()),
        ..ctx
    };
    tokio::join!(
        replicaset::run(ctx.clone()),
        deployment::run(ctx.clone()),
        gc::run(ctx.clone()),
        namespace::run(ctx.clone()),
        serviceaccount::run_with_root_ca(ctx.clone(), ctx.config.root_ca.clone()),
        endpoints::run(ctx.clone()),
        endpointslice::run(ctx.clone()),
        endpointslicemirroring::run(ctx.clone()),
        nodelifecycle::run(ctx.clone()),
        podgc::run(ctx.clone()),
        nodeipam::run(ctx.clone()),
        servicelb::run(ctx.clone()),
        daemonset::run(ctx.clone()),
        statefulset::run(ctx.clone()),
        job::run(ctx.clone()),
        cronjob::run(ctx.clone()),
        clusterroleaggregation::run(ctx.clone()),
        certificates::run(ctx.clone()),
        tokens::run(ctx.clone()),
    );
}
