//! `skiff images import FILE`: load a docker-archive or OCI tarball into
//! the local node's runtime (the agent's containerd, found through
//! `--data-dir` as for the server), as `k3s ctr images import`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Import image tarballs into the node's runtime.
    Import {
        /// docker-archive or OCI tarballs.
        files: Vec<PathBuf>,
        #[arg(long, env = "SKIFF_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let What::Import { files, data_dir } = args.what;
    let data_dir = data_dir.unwrap_or_else(super::default_data_dir);
    let config = super::agent::config(data_dir, None, None);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        for f in &files {
            skiff_kubelet::import_image(&config, f).await.with_context(|| format!("importing {}", f.display()))?;
            println!("imported {}", f.display());
        }
        Ok(ExitCode::SUCCESS)
    })
}
