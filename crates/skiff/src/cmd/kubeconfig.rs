//! `skiff kubeconfig create USER [--group G]`: a kubeconfig for a new user
//! of this cluster, its credential a client certificate signed by the
//! cluster CA (CN the user, O the group, a year), printed on stdout. Run
//! on a server (it reads the CA key from the data directory); what the
//! user may do is up to RBAC bindings naming them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print a kubeconfig for USER (in group G) with a new client certificate.
    Create {
        user: String,
        /// The user's group (the certificate's O).
        #[arg(long)]
        group: Option<String>,
        /// The server URL the kubeconfig names (default: the admin kubeconfig's).
        #[arg(long)]
        server: Option<String>,
        /// The server's data directory (its CA).
        #[arg(long, env = "SKIFF_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Command::Create {
        user,
        group,
        server,
        data_dir,
    } = args.command;
    anyhow::ensure!(!user.is_empty(), "the user name may not be empty");
    let data_dir = data_dir.unwrap_or_else(super::default_data_dir);
    let ca_key = data_dir.join("tls/server-ca.key");
    anyhow::ensure!(
        ca_key.exists(),
        "{}: no cluster CA here (is --data-dir a server's data directory?)",
        ca_key.display()
    );
    let server = match server {
        Some(s) => s,
        None => {
            let admin = data_dir.join("kubeconfig.yaml");
            std::fs::read_to_string(&admin)
                .with_context(|| format!("reading {} (or give --server)", admin.display()))?
                .lines()
                .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_string))
                .with_context(|| format!("no server in {}", admin.display()))?
        }
    };
    let pki = skiff_apiserver::tls::Pki::load_or_create(&data_dir, &[])?;
    let (cert, key) = pki.issue_client(&user, group.as_deref())?;
    print!("{}", pki.kubeconfig_with_cert(&server, &user, &cert, &key));
    Ok(ExitCode::SUCCESS)
}
