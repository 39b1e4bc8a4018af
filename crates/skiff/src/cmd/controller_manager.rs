//! `skiff controller-manager`: the controllers alone, against any API
//! server, active only while holding the kube-controller-manager Lease.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    /// Kubeconfig of the API server to manage.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Cluster pod CIDR nodes get their spec.podCIDR from.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let cidr = super::server::parse_cidr(&args.cluster_cidr)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let client = skiff_runtime::client_from_kubeconfig(&args.kubeconfig).await.context("kube client")?;
        let root_ca = skiff_controllers::serviceaccount::root_ca_from_kubeconfig(&args.kubeconfig).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no cluster CA for kube-root-ca.crt");
            None
        });
        run_elected(client, cidr, root_ca, super::shutdown_signal()).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The controller manager under leader election, until `shutdown`.
pub async fn run_elected(
    client: kube::Client,
    cluster_cidr: (std::net::Ipv4Addr, u8),
    root_ca: Option<String>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let identity = super::identity("controller-manager");
    let config = skiff_controllers::Config { cluster_cidr, root_ca, ..Default::default() };
    let ctx = skiff_controllers::Context {
        client: client.clone(),
        recorder: Arc::new(skiff_runtime::events::Recorder::new(client.clone(), "controller-manager", Some(&identity))),
        config: Arc::new(config),
    };
    let elector = skiff_runtime::leader::LeaderElector::new(client, "kube-system", "kube-controller-manager", &identity, Default::default());
    elector.run(shutdown, || skiff_controllers::run_all(ctx.clone())).await;
}
