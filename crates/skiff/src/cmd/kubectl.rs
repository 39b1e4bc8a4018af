//! `skiff kubectl ARGS...`: the system kubectl with the admin kubeconfig
//! (as `k3s kubectl`). KUBECONFIG, when set, wins.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Data directory of the server whose kubeconfig to use.
    #[arg(long, env = "SKIFF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Arguments passed to kubectl unchanged.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.unwrap_or_else(super::default_data_dir);
    let mut cmd = std::process::Command::new("kubectl");
    if std::env::var_os("KUBECONFIG").is_none() {
        let kubeconfig = data_dir.join("kubeconfig.yaml");
        if !kubeconfig.exists() {
            anyhow::bail!(
                "{} does not exist: start `skiff server` first (or pass --data-dir)",
                kubeconfig.display()
            );
        }
        cmd.env("KUBECONFIG", kubeconfig);
    }
    let err = cmd.args(&args.args).exec();
    Err(err).context("running kubectl")
}
