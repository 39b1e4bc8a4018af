//! The `skiff` binary: one thin dispatcher over the component crates (as
//! k3s dispatches its subcommands from one main). Each subcommand lives in
//! its own file under `cmd/`.

use clap::{Parser, Subcommand};

mod cmd;

// The API server allocates heavily (JSON values per request): mimalloc is
// measurably faster than glibc malloc here (docs/benchmarks.md). Built
// without transparent huge pages (feature no_thp): on hosts whose THP mode
// is `madvise` (Debian's), mimalloc's madvise(MADV_HUGEPAGE) on its arenas
// turned every touched arena region into 2 MiB of resident memory, which
// tripled the idle agent's anonymous memory (13.5 → 4.6 MiB without).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "A Kubernetes-compatible container orchestrator in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: API server with its embedded store.
    Server(cmd::server::Args),
    /// Run the node agent (kubelet) and join a cluster.
    Agent(cmd::agent::Args),
    /// Manage the local node's images (`skiff images import FILE`).
    Images(cmd::images::Args),
    /// Run the controller manager alone (leader-elected).
    ControllerManager(cmd::controller_manager::Args),
    /// Run the scheduler alone (leader-elected).
    Scheduler(cmd::scheduler::Args),
    /// Simulated (hollow) nodes for rehearsing scale and scheduling.
    Sim(cmd::sim::Args),
    /// Benchmarks that print figures (`skiff bench api`).
    Bench(cmd::bench::Args),
    /// Save or restore all cluster state (`skiff backup save FILE`, `skiff backup restore FILE --data-dir DIR`).
    Backup(cmd::backup::Args),
    /// Encryption of Secrets at rest (`skiff secrets-encrypt status|rotate|reencrypt`, on a stopped server).
    SecretsEncrypt(cmd::secrets_encrypt::Args),
    /// Kubeconfigs for new users (`skiff kubeconfig create USER --group G`).
    Kubeconfig(cmd::kubeconfig::Args),
    /// Run the system kubectl with this cluster's admin kubeconfig.
    #[command(disable_help_flag = true)]
    Kubectl(cmd::kubectl::Args),
}

/// Raise the soft open-files limit to the hard one, as the Go runtime does
/// for kube-apiserver (and k3s's unit sets LimitNOFILE=1048576): every
/// connection, watch and container log is a descriptor, and the default
/// soft limit of 1,024 is what a few idle clients would exhaust.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(max)) = (limit.current, limit.maximum)
        && current < max
    {
        limit.current = Some(max);
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

fn main() -> std::process::ExitCode {
    raise_open_files_limit();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => cmd::server::run(args),
        Command::Kubectl(args) => cmd::kubectl::run(args),
        Command::Kubeconfig(args) => cmd::kubeconfig::run(args),
        Command::Backup(args) => cmd::backup::run(args),
        Command::SecretsEncrypt(args) => cmd::secrets_encrypt::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Agent(args) => cmd::agent::run(args),
        Command::Images(args) => cmd::images::run(args),
        Command::Scheduler(args) => cmd::scheduler::run(args),
        Command::Sim(args) => cmd::sim::run(args),
        Command::ControllerManager(args) => cmd::controller_manager::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("skiff: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
