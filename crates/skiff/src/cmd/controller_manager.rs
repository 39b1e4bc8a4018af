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
    /// How long a node may go without renewing its Lease before it is NotReady/Unknown (seconds).
    #[arg(long, default_value_t = 40)]
    pub node_monitor_grace_period: u64,
    /// PEM CA certificate the CSR signer issues cluster-scoped certificates from.
    #[arg(long, requires = "cluster_signing_key_file")]
    pub cluster_signing_cert_file: Option<PathBuf>,
    /// PEM private key of --cluster-signing-cert-file.
    #[arg(long, requires = "cluster_signing_cert_file")]
    pub cluster_signing_key_file: Option<PathBuf>,
    /// The P-256 key (PKCS#8, DER or PEM) service-account token Secrets are
    /// signed with: the API server's <data-dir>/tls/service-account.key.
    #[arg(long)]
    pub service_account_private_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub leader: super::LeaderElectArgs,
}

/// How long issued certificates live (kube-controller-manager's
/// --cluster-signing-duration default).
pub const SIGNING_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

/// The CSR signer's CA from a certificate and key file.
pub fn signing(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<skiff_controllers::certificates::Signing> {
    Ok(skiff_controllers::certificates::Signing {
        ca_pem: std::fs::read_to_string(cert)
            .with_context(|| format!("reading {}", cert.display()))?,
        key_pem: std::fs::read_to_string(key)
            .with_context(|| format!("reading {}", key.display()))?,
        duration: SIGNING_DURATION,
    })
}

/// What the binary configures of the controllers.
pub struct Settings {
    pub cluster_cidr: (std::net::Ipv4Addr, u8),
    pub root_ca: Option<String>,
    pub node_monitor_grace_period: std::time::Duration,
    pub election: skiff_runtime::leader::LeaderConfig,
    pub signing: Option<skiff_controllers::certificates::Signing>,
    pub service_account_key: Option<Arc<skiff_api::jwt::EsKey>>,
}

/// The service-account signing key from a PKCS#8 file (DER, or PEM).
pub fn service_account_key(path: &std::path::Path) -> anyhow::Result<Arc<skiff_api::jwt::EsKey>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let der = if bytes.starts_with(b"-----BEGIN") {
        super::agent::pem_block(&bytes, "PRIVATE KEY")
            .with_context(|| format!("{}: no PRIVATE KEY block", path.display()))?
    } else {
        bytes
    };
    let key = skiff_api::jwt::EsKey::from_pkcs8(&der)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Arc::new(key))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let cidr = super::server::parse_cidr(&args.cluster_cidr)?;
    let election = args.leader.config()?;
    let signing = match (
        &args.cluster_signing_cert_file,
        &args.cluster_signing_key_file,
    ) {
        (Some(cert), Some(key)) => Some(signing(cert, key)?),
        _ => None,
    };
    let service_account_key = args
        .service_account_private_key_file
        .as_deref()
        .map(service_account_key)
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = skiff_runtime::client_from_kubeconfig(&args.kubeconfig)
            .await
            .context("kube client")?;
        let root_ca = skiff_controllers::serviceaccount::root_ca_from_kubeconfig(&args.kubeconfig)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no cluster CA for kube-root-ca.crt");
                None
            });
        let settings = Settings {
            cluster_cidr: cidr,
            root_ca,
            node_monitor_grace_period: std::time::Duration::from_secs(
                args.node_monitor_grace_period,
            ),
            election,
            signing,
            service_account_key,
        };
        run_elected(client, settings, super::shutdown_signal()).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The controller manager under leader election, until `shutdown`.
pub async fn run_elected(
    client: kube::Client,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let identity = super::identity("controller-manager");
    let config = skiff_controllers::Config {
        cluster_cidr: settings.cluster_cidr,
        root_ca: settings.root_ca,
        node_monitor_grace_period: settings.node_monitor_grace_period,
        signing: settings.signing,
        service_account_key: settings.service_account_key,
        ..Default::default()
    };
    let mut ctx = skiff_controllers::Context::new(client.clone(), config);
    ctx.recorder = Arc::new(skiff_runtime::events::Recorder::new(
        client.clone(),
        "controller-manager",
        Some(&identity),
    ));
    let elector = skiff_runtime::leader::LeaderElector::new(
        client,
        "kube-system",
        "kube-controller-manager",
        &identity,
        settings.election,
    );
    elector
        .run(shutdown, || skiff_controllers::run_all(ctx.clone()))
        .await;
}
