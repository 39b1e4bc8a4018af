//! Secrets encryption at rest, as k3s's `--secrets-encryption` and
//! `k3s secrets-encrypt`: the server's flags, the store decorator it puts
//! in front of the datastore, and `skiff secrets-encrypt
//! status|rotate|reencrypt`.
//!
//! A new cluster gets `<data-dir>/cred/encryption-config.json` (0600, an
//! EncryptionConfiguration with a random aescbc key for Secrets, then
//! identity) at its first start. An existing cluster without that file keeps
//! running unencrypted unless started with `--secrets-encryption`.
//! `rotate` and `reencrypt` work offline, on the data directory (or etcd) of
//! a stopped server, which picks the new configuration up at its next start:
//! a running server keeps its keys in memory, so a key it does not know
//! would make the Secrets written with it unreadable to it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use skiff_store::Store;
use skiff_store_encryption::{EncryptedStore, EncryptionConfiguration, ResourceRef, Transformers};

/// Flags of `skiff server` for encryption at rest.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct EncryptionArgs {
    /// Encrypt Secrets at rest (k3s's flag). On by default for a new
    /// cluster; `--secrets-encryption` turns it on for an existing one,
    /// `--secrets-encryption=false` keeps a new one unencrypted.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub secrets_encryption: Option<bool>,
    /// An EncryptionConfiguration file (apiserver.config.k8s.io/v1, as
    /// kube-apiserver's flag) instead of `<data-dir>/cred/encryption-config.json`.
    #[arg(long, value_name = "FILE")]
    pub encryption_provider_config: Option<PathBuf>,
}

/// Where the generated configuration lives (k3s: `server/cred/encryption-config.json`).
pub fn default_config_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cred").join("encryption-config.json")
}

/// Every served resource, for the configuration's resource names.
pub fn catalog() -> Vec<ResourceRef> {
    skiff_api::registry::registry()
        .all()
        .iter()
        .map(|r| ResourceRef {
            group: r.group.to_string(),
            resource: r.plural.to_string(),
            key_prefix: r.key_prefix(),
        })
        .collect()
}

fn encrypted(
    store: Arc<dyn Store>,
    config: &EncryptionConfiguration,
) -> anyhow::Result<EncryptedStore> {
    let transformers = Transformers::new(config, &catalog())?;
    Ok(EncryptedStore::new(store, transformers))
}

/// The store the API server runs on: `store` behind the encryption the
/// configuration file asks for, creating that file for a new cluster.
pub async fn wrap(
    store: Arc<dyn Store>,
    args: &EncryptionArgs,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn Store>> {
    let path = args
        .encryption_provider_config
        .clone()
        .unwrap_or_else(|| default_config_path(data_dir));
    let config = if path.exists() {
        EncryptionConfiguration::load(&path)?
    } else if args.encryption_provider_config.is_some() {
        bail!(
            "--encryption-provider-config {}: no such file",
            path.display()
        );
    } else {
        let new_cluster = store
            .range("/registry/", None, 1)
            .await
            .context("reading the datastore")?
            .kvs
            .is_empty();
        // Values written encrypted cannot be served without their keys: a
        // server restored from a backup of an encrypted cluster needs the
        // original configuration, and starting without it would hide them.
        let first_secret = store
            .range("/registry/secrets/", None, 1)
            .await
            .context("reading the datastore")?;
        if let Some(kv) = first_secret.kvs.first()
            && kv.value.starts_with(b"k8s:enc:")
        {
            bail!(
                "the datastore holds Secrets encrypted at rest ({}), and there is no {}: start with --encryption-provider-config pointing at the original server's cred/encryption-config.json",
                String::from_utf8_lossy(kv.value.get(..kv.value.len().min(40)).unwrap_or_default())
                    .split(':')
                    .take(4)
                    .collect::<Vec<_>>()
                    .join(":"),
                path.display()
            );
        }
        match args.secrets_encryption {
            Some(false) => return Ok(store),
            Some(true) => {}
            None if new_cluster => {}
            None => {
                tracing::info!(
                    "Secrets are stored unencrypted in this existing cluster; start with --secrets-encryption to encrypt new writes, then run `skiff secrets-encrypt reencrypt`"
                );
                return Ok(store);
            }
        }
        let config = EncryptionConfiguration::generate()?;
        config.write(&path)?;
        tracing::info!(path = %path.display(), "secrets encryption at rest: generated a new aescbc key");
        config
    };
    let store = encrypted(store, &config)
        .with_context(|| format!("encryption provider configuration {}", path.display()))?;
    tracing::info!(path = %path.display(), "secrets encryption at rest is on");
    Ok(Arc::new(store))
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Data directory of the (stopped) server.
    #[arg(long, env = "SKIFF_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// The EncryptionConfiguration file, if not `<data-dir>/cred/encryption-config.json`.
    #[arg(long, value_name = "FILE", global = true)]
    encryption_provider_config: Option<PathBuf>,
    #[command(flatten)]
    datastore: super::backup::DatastoreArgs,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Whether encryption is on, which key encrypts, and how many Secrets each key wrote.
    Status,
    /// Put a new aescbc key first, re-encrypt every Secret with it, then drop the old keys.
    Rotate,
    /// Re-encrypt every value not written by the current key (after editing the configuration).
    Reencrypt,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run_async(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn run_async(args: Args) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(super::default_data_dir);
    let path = args
        .encryption_provider_config
        .clone()
        .unwrap_or_else(|| default_config_path(&data_dir));
    if args.datastore.datastore_endpoint.is_empty()
        && !super::backup::sqlite_path(&data_dir).is_file()
    {
        bail!(
            "{}: no cluster state there (use --data-dir)",
            data_dir.display()
        );
    }
    let store = super::backup::open_store(&args.datastore, &data_dir)
        .await
        .context("opening the datastore (stop the server first: the data directory is in use while it runs)")?;
    let config = if path.exists() {
        Some(EncryptionConfiguration::load(&path)?)
    } else {
        None
    };
    match args.command {
        Command::Status => {
            let Some(config) = config else {
                println!(
                    "Encryption Status: Disabled, no configuration file ({})",
                    path.display()
                );
                return Ok(());
            };
            println!("Encryption Status: Enabled");
            println!("Configuration: {}", path.display());
            for rule in encrypted(store, &config)?.status().await? {
                println!();
                println!("Resources: {}", rule.resources.join(", "));
                println!("Encrypting with: {}", rule.writer);
                println!("{:<8}{:<48}STORED", "ACTIVE", "PROVIDER/KEY");
                for (by, n) in &rule.counts {
                    let active = if *by == rule.writer { "*" } else { "" };
                    println!("{active:<8}{by:<48}{n}");
                }
            }
        }
        Command::Rotate => {
            let mut config = match config {
                Some(c) => c,
                None => EncryptionConfiguration::generate()?,
            };
            let name = config.rotate()?;
            // Written with the old keys still in it: an interrupted rotation
            // leaves every value readable; run it again to finish.
            config.write(&path)?;
            let report = encrypted(store.clone(), &config)?.reencrypt().await?;
            config.drop_old_keys();
            config.write(&path)?;
            println!(
                "skiff: new key {name} encrypts; re-encrypted {} of {} stored values; old keys removed from {}",
                report.rewritten,
                report.scanned,
                path.display()
            );
            println!(
                "skiff: start the server(s) again (with etcd, copy {} to every server first)",
                path.display()
            );
        }
        Command::Reencrypt => {
            let Some(config) = config else {
                bail!(
                    "{}: no encryption configuration (run `skiff secrets-encrypt rotate` to create one)",
                    path.display()
                );
            };
            let report = encrypted(store, &config)?.reencrypt().await?;
            println!(
                "skiff: re-encrypted {} of {} stored values with the current key",
                report.rewritten, report.scanned
            );
        }
    }
    Ok(())
}
