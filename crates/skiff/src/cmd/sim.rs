//! `skiff sim --nodes N`: hollow nodes (what kwok does, built in). They
//! register, renew their Leases, report capacity, and run the pods bound to
//! them in name only, so scheduling and scale can be rehearsed without machines.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    /// Kubeconfig of the cluster to join.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Node name prefix.
    #[arg(long, default_value = "sim-node-")]
    pub prefix: String,
    /// CPU capacity of each node.
    #[arg(long, default_value = "8")]
    pub cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "32Gi")]
    pub memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value_t = 110)]
    pub pods: u32,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = skiff_runtime::client_from_kubeconfig(&args.kubeconfig)
            .await
            .context("kube client")?;
        let config = skiff_sim::SimConfig {
            nodes: args.nodes,
            prefix: args.prefix,
            cpu: args.cpu,
            memory: args.memory,
            pods: args.pods,
            labels: Default::default(),
        };
        tokio::select! {
            () = skiff_sim::run(client, config) => {}
            () = super::shutdown_signal() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}
