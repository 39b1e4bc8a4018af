//! The datastore flags shared by `skiff server` and `skiff backup`, and
//! `skiff backup save|restore`: a consistent snapshot of all cluster state
//! (every key under `/registry/` at one revision) from either backend, and
//! its restoration into an empty embedded store or an empty etcd prefix
//! (restoring into the other backend migrates between them).
//!
//! File format (version 1, integers big-endian):
//! `"SKIFFBAK"`, version u32, revision i64, count u64, then `count` times
//! (key length u32, key, value length u32, value), then the SHA-256 of
//! everything before it. The whole file is read and checked before anything
//! is written to the target, and `save` writes a temporary file that it
//! renames into place only once complete. Backups are written 0600 through a
//! new file (O_EXCL|O_NOFOLLOW). They hold the values as stored: Secrets
//! encrypted at rest stay encrypted, and restoring them needs the same
//! `cred/encryption-config.json` in the target data directory. Restore takes
//! only keys under `/registry/` with JSON-object or encrypted values.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use skiff_store::Store;

/// Where cluster state lives: the embedded SQLite store in the data
/// directory (default) or an external etcd cluster.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DatastoreArgs {
    /// etcd client URLs (comma-separated or repeated); selects the etcd
    /// store instead of the embedded one.
    #[arg(long = "datastore-endpoint", value_delimiter = ',')]
    pub datastore_endpoint: Vec<String>,
    /// CA certificate (PEM) of the etcd members.
    #[arg(long = "datastore-cafile")]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long = "datastore-certfile")]
    pub datastore_certfile: Option<PathBuf>,
    /// Client key (PEM) for etcd.
    #[arg(long = "datastore-keyfile")]
    pub datastore_keyfile: Option<PathBuf>,
    /// etcd key prefix of this cluster's objects (Kubernetes's --etcd-prefix).
    #[arg(long = "datastore-prefix", default_value = skiff_store_etcd::REGISTRY)]
    pub datastore_prefix: String,
}

impl DatastoreArgs {
    fn etcd_config(&self) -> Option<skiff_store_etcd::EtcdConfig> {
        if self.datastore_endpoint.is_empty() {
            return None;
        }
        let mut config = skiff_store_etcd::EtcdConfig::new(self.datastore_endpoint.clone());
        config.prefix = self.datastore_prefix.clone();
        config.ca_file = self.datastore_cafile.clone();
        config.cert_file = self.datastore_certfile.clone();
        config.key_file = self.datastore_keyfile.clone();
        Some(config)
    }
}

/// The embedded store's file in a data directory.
pub fn sqlite_path(data_dir: &Path) -> PathBuf {
    data_dir.join("db").join("state.db")
}

/// Opens the store the server runs on: etcd when endpoints are given
/// (compacting its history every 5 minutes, as kube-apiserver does), else
/// the embedded store in `data_dir`.
pub async fn open_store(ds: &DatastoreArgs, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(config) = ds.etcd_config() {
        let store = Arc::new(
            skiff_store_etcd::EtcdStore::connect(config)
                .await
                .context("opening the etcd store")?,
        );
        store.spawn_compactor(std::time::Duration::from_secs(300));
        return Ok(store);
    }
    let db = sqlite_path(data_dir);
    if let Some(dir) = db.parent() {
        super::create_private_dir(dir)?;
    }
    let store = skiff_store_sqlite::SqliteStore::open(&db).context("opening the embedded store")?;
    Ok(Arc::new(store))
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: BackupCommand,
}

#[derive(clap::Subcommand)]
enum BackupCommand {
    /// Write a consistent snapshot of all cluster state to FILE (the server may be running).
    Save(Target),
    /// Rebuild cluster state from FILE into an empty embedded store (--data-dir) or an empty etcd prefix.
    Restore(Target),
}

#[derive(clap::Args)]
struct Target {
    /// The backup file.
    file: PathBuf,
    /// Data directory of the embedded store.
    #[arg(long, env = "SKIFF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    datastore: DatastoreArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        match args.command {
            BackupCommand::Save(t) => save(t).await,
            BackupCommand::Restore(t) => restore(t).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A snapshot: the revision it was read at and every key with its value.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: i64,
    pub entries: Vec<(String, Vec<u8>)>,
}

const MAGIC: &[u8; 8] = b"SKIFFBAK";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 8;
const DIGEST: usize = 32;

pub fn encode(snapshot: &Snapshot) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(
        HEADER
            + DIGEST
            + snapshot
                .entries
                .iter()
                .map(|(k, v)| 8 + k.len() + v.len())
                .sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&snapshot.revision.to_be_bytes());
    out.extend_from_slice(&(snapshot.entries.len() as u64).to_be_bytes());
    for (key, value) in &snapshot.entries {
        for part in [key.as_bytes(), value.as_slice()] {
            let len = u32::try_from(part.len()).context("key or value above 4 GiB")?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    Ok(out)
}

/// Parses and verifies a backup; any damage is an error naming it.
pub fn decode(data: &[u8]) -> anyhow::Result<Snapshot> {
    if data.len() < 8 || &data[..8] != MAGIC {
        bail!("not a skiff backup (bad magic)");
    }
    if data.len() < HEADER + DIGEST {
        bail!("backup is truncated ({} bytes)", data.len());
    }
    let (body, digest) = data.split_at(data.len() - DIGEST);
    if Sha256::digest(body).as_slice() != digest {
        bail!("backup is corrupt or truncated (checksum mismatch)");
    }
    let mut r = Reader { data: body, at: 8 };
    let version = u32::from_be_bytes(r.array()?);
    if version != VERSION {
        bail!("unsupported backup format version {version} (this skiff reads version {VERSION})");
    }
    let revision = i64::from_be_bytes(r.array()?);
    let count = u64::from_be_bytes(r.array()?);
    let mut entries = Vec::new();
    for _ in 0..count {
        let key = r.chunk()?;
        let key =
            String::from_utf8(key.to_vec()).context("backup holds a key that is not UTF-8")?;
        let value = r.chunk()?.to_vec();
        entries.push((key, value));
    }
    if r.at != body.len() {
        bail!("backup has {} unexpected trailing bytes", body.len() - r.at);
    }
    Ok(Snapshot { revision, entries })
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .context("backup ends in the middle of an entry")?;
        let part = &self.data[self.at..end];
        self.at = end;
        Ok(part)
    }

    fn array<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn chunk(&mut self) -> anyhow::Result<&'a [u8]> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        self.take(len)
    }
}

/// Reads a snapshot of `/registry/` from the datastore `t` names.
async fn read_snapshot(t: &Target) -> anyhow::Result<Snapshot> {
    let range = if let Some(config) = t.datastore.etcd_config() {
        let store = skiff_store_etcd::EtcdStore::connect(config)
            .await
            .context("connecting to etcd")?;
        store
            .snapshot(skiff_store_etcd::REGISTRY, 1000)
            .await
            .context("reading etcd")?
    } else {
        let db = sqlite_path(&t.data_dir.clone().unwrap_or_else(super::default_data_dir));
        tokio::task::spawn_blocking(move || {
            skiff_store_sqlite::read_snapshot(&db, skiff_store_etcd::REGISTRY)
        })
        .await
        .context("reading the embedded store")?
        .context("reading the embedded store")?
    };
    Ok(Snapshot {
        revision: range.revision,
        entries: range.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
    })
}

async fn save(t: Target) -> anyhow::Result<()> {
    let snapshot = read_snapshot(&t).await?;
    let data = encode(&snapshot)?;
    let mut tmp = t.file.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    {
        use std::io::Write;
        let mut f = create_private_new(&tmp)?;
        f.write_all(&data)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &t.file)
        .with_context(|| format!("renaming {} to {}", tmp.display(), t.file.display()))?;
    eprintln!(
        "skiff: saved {} keys at revision {} to {}",
        snapshot.entries.len(),
        snapshot.revision,
        t.file.display()
    );
    Ok(())
}

/// Creates `path` for the backup: a new file (O_EXCL: a file someone planted
/// there is an error, not reused; O_NOFOLLOW: nor is a symlink followed)
/// readable by its owner only, since it holds every Secret.
fn create_private_new(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Ours, left by an interrupted save, when it is a regular file we own.
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::symlink_metadata(path)
                .with_context(|| format!("checking {}", path.display()))?;
            let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
            if !meta.file_type().is_file() || Some(meta.uid()) != uid {
                bail!(
                    "{} exists and is not a file of ours: remove it or save elsewhere",
                    path.display()
                );
            }
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
            open().with_context(|| format!("creating {}", path.display()))
        }
        r => r.with_context(|| format!("creating {}", path.display())),
    }
}

/// What a backup may hold: keys under `/registry/` whose values are JSON
/// objects or values encrypted at rest (`k8s:enc:`). Anything else (such as
/// a `/bootstrap/` key, or a value no API server could read) is refused
/// before anything is written.
pub fn check_entries(snapshot: &Snapshot) -> anyhow::Result<()> {
    for (key, value) in &snapshot.entries {
        if !key.starts_with(skiff_store_etcd::REGISTRY) || key.contains("/../") {
            bail!(
                "backup holds key {key:?}, outside {}",
                skiff_store_etcd::REGISTRY
            );
        }
        if value.starts_with(b"k8s:enc:") {
            continue;
        }
        if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(value).is_err() {
            bail!("backup holds a value for {key} that is neither a JSON object nor encrypted");
        }
    }
    Ok(())
}

async fn restore(t: Target) -> anyhow::Result<()> {
    let data = std::fs::read(&t.file).with_context(|| format!("reading {}", t.file.display()))?;
    let snapshot =
        decode(&data).with_context(|| format!("{}: refusing to restore", t.file.display()))?;
    check_entries(&snapshot)
        .with_context(|| format!("{}: refusing to restore", t.file.display()))?;
    let (store, target): (Arc<dyn Store>, String) = if let Some(config) = t.datastore.etcd_config()
    {
        let target = format!(
            "etcd {} prefix {}",
            config.endpoints.join(","),
            config.prefix
        );
        (
            Arc::new(
                skiff_store_etcd::EtcdStore::connect(config)
                    .await
                    .context("connecting to etcd")?,
            ),
            target,
        )
    } else {
        let Some(data_dir) = t.data_dir.clone() else {
            bail!(
                "restore needs --data-dir DIR (a new, empty data directory) or --datastore-endpoint"
            );
        };
        super::create_private_dir(&data_dir)?;
        let db = sqlite_path(&data_dir);
        if let Some(dir) = db.parent() {
            super::create_private_dir(dir)?;
        }
        let store = skiff_store_sqlite::SqliteStore::open(&db)
            .with_context(|| format!("opening the embedded store in {}", data_dir.display()))?;
        (
            Arc::new(store),
            format!("data directory {}", data_dir.display()),
        )
    };
    let existing = store
        .range(skiff_store_etcd::REGISTRY, None, 1)
        .await
        .context("checking the target is empty")?;
    if !existing.kvs.is_empty() {
        bail!(
            "{target} already holds cluster state (e.g. {}); restore only into an empty one",
            existing.kvs[0].key
        );
    }
    let total = snapshot.entries.len();
    let mut writes = futures::stream::iter(snapshot.entries.into_iter().map(|(key, value)| {
        let store = store.clone();
        async move {
            store
                .create(&key, value)
                .await
                .with_context(|| format!("restoring {key}"))
        }
    }))
    .buffer_unordered(32);
    while let Some(r) = writes.next().await {
        r?;
    }
    eprintln!(
        "skiff: restored {total} keys (saved at revision {}) into {target}",
        snapshot.revision
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            revision: 42,
            entries: vec![
                ("/registry/a".into(), b"1".to_vec()),
                ("/registry/b".into(), Vec::new()),
                ("/registry/c".into(), vec![0xff; 300]),
            ],
        }
    }

    #[test]
    fn round_trips() {
        let s = sample();
        assert_eq!(decode(&encode(&s).unwrap()).unwrap(), s);
        let empty = Snapshot {
            revision: 1,
            entries: Vec::new(),
        };
        assert_eq!(decode(&encode(&empty).unwrap()).unwrap(), empty);
    }

    #[test]
    fn every_truncation_is_refused() {
        let data = encode(&sample()).unwrap();
        for len in 0..data.len() {
            assert!(
                decode(&data[..len]).is_err(),
                "truncated to {len} bytes was accepted"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let data = encode(&sample()).unwrap();
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flipped byte {i} was accepted");
        }
    }

    #[test]
    fn restore_takes_only_registry_objects() {
        let ok = Snapshot {
            revision: 1,
            entries: vec![
                (
                    "/registry/pods/default/a".into(),
                    b"{\"kind\":\"Pod\"}".to_vec(),
                ),
                (
                    "/registry/secrets/default/s".into(),
                    b"k8s:enc:aescbc:v1:k:xxxx".to_vec(),
                ),
            ],
        };
        check_entries(&ok).unwrap();
        for (key, value) in [
            ("/bootstrap/abc", b"{}".to_vec()),
            ("registry/x", b"{}".to_vec()),
            ("/registry/../bootstrap/x", b"{}".to_vec()),
            ("/registry/pods/default/a", b"[1]".to_vec()),
            ("/registry/pods/default/a", b"not json".to_vec()),
        ] {
            let bad = Snapshot {
                revision: 1,
                entries: vec![(key.into(), value)],
            };
            assert!(check_entries(&bad).is_err(), "{key} accepted");
        }
    }

    #[test]
    fn backup_files_are_new_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.partial");
        drop(create_private_new(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A leftover of ours is replaced (and stays private).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create_private_new(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A symlink planted there is neither followed nor reused.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = dir.path().join("l.partial");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_private_new(&link).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let data = encode(&sample()).unwrap();
        let e = decode(&data[..data.len() - 1]).unwrap_err().to_string();
        assert!(e.contains("corrupt or truncated"), "{e}");
        assert!(
            decode(b"hello world")
                .unwrap_err()
                .to_string()
                .contains("not a skiff backup")
        );
    }
}
