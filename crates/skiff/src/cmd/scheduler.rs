//! `skiff scheduler`: the scheduler alone, against any API server, active
//! only while holding the kube-scheduler Lease.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    /// Kubeconfig of the API server to schedule for.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Pods with this spec.schedulerName are this scheduler's.
    #[arg(long, default_value = "default-scheduler")]
    pub scheduler_name: String,
    #[command(flatten)]
    pub leader: super::LeaderElectArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let election = args.leader.config()?;
    runtime.block_on(async move {
        let client = skiff_runtime::client_from_kubeconfig(&args.kubeconfig)
            .await
            .context("kube client")?;
        run_elected(
            client,
            args.scheduler_name,
            election,
            super::shutdown_signal(),
        )
        .await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The scheduler under leader election, until `shutdown`. Each scheduler
/// name elects on its own Lease (kube-scheduler for the default one).
pub async fn run_elected(
    client: kube::Client,
    scheduler_name: String,
    election: skiff_runtime::leader::LeaderConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let identity = super::identity("scheduler");
    let lease = if scheduler_name == "default-scheduler" {
        "kube-scheduler".to_string()
    } else {
        scheduler_name.clone()
    };
    let elector = skiff_runtime::leader::LeaderElector::new(
        client.clone(),
        "kube-system",
        &lease,
        &identity,
        election,
    );
    elector
        .run(shutdown, || {
            let config = skiff_scheduler::Config {
                scheduler_name: scheduler_name.clone(),
                ..Default::default()
            };
            skiff_scheduler::run(client.clone(), config)
        })
        .await;
}
