//! Encryption at rest, as kube-apiserver's `--encryption-provider-config`
//! (k8s.io/apiserver/pkg/server/options/encryptionconfig and
//! pkg/storage/value): a [`Store`] decorator that encrypts the values of the
//! configured resources on create and update and decrypts them on get,
//! range, delete and watch. Everything above it (the watch cache, handlers,
//! controllers) sees plain objects; the backend, its files and backups read
//! from it hold ciphertext.
//!
//! Only this crate and `skiff-store` are needed: which store keys belong to
//! a configured resource is told by the caller ([`Catalog`]), so the crate
//! knows nothing of the API types.
//!
//! A value that no provider decrypts is an error on `get` (the API answers
//! 500 with `unable to transform key "...": <reason>`, as Kubernetes). On
//! `range` and `watch`, which feed the one watch cache of every resource,
//! such a value is passed on as stored and logged: the cache then skips it
//! as undecodable, so one lost key does not take every resource down.

pub mod config;
pub mod providers;

use std::sync::Arc;

use futures::StreamExt;
use skiff_store::{Event, KeyValue, RangeResult, Store, StoreError, WatchBatch, WatchStream};

pub use config::{ConfigError, EncryptionConfiguration};
pub use providers::{Providers, TransformError};

/// One served resource, as the caller's registry knows it.
#[derive(Clone, Debug)]
pub struct ResourceRef {
    /// "" for the core group.
    pub group: String,
    pub resource: String,
    /// The store key prefix of its objects ("/registry/secrets/").
    pub key_prefix: String,
}

/// The resources a configuration can name.
pub type Catalog = [ResourceRef];

struct Rule {
    /// As written in the configuration.
    resources: Vec<String>,
    prefixes: Vec<String>,
    providers: Providers,
}

/// A parsed configuration bound to store key prefixes.
pub struct Transformers {
    rules: Vec<Rule>,
}

impl Transformers {
    /// Binds `config` to the resources of `catalog`: `secrets`,
    /// `deployments.apps`, `*.apps`, `*.` (the core group) and `*.*`
    /// (everything under `/registry/`). A resource named in an earlier entry
    /// keeps that entry's providers. Names the catalog does not know match
    /// nothing (Kubernetes accepts them for resources not yet served).
    pub fn new(
        config: &EncryptionConfiguration,
        catalog: &Catalog,
    ) -> Result<Transformers, ConfigError> {
        config.validate()?;
        let mut rules = Vec::with_capacity(config.resources.len());
        let mut taken: Vec<String> = Vec::new();
        for rc in &config.resources {
            let providers = config::build_providers(rc)?;
            let mut prefixes = Vec::new();
            for name in &rc.resources {
                let (resource, group) = name.split_once('.').unwrap_or((name.as_str(), ""));
                let matched: Vec<String> = if name == "*.*" {
                    vec!["/registry/".to_string()]
                } else {
                    catalog
                        .iter()
                        .filter(|r| r.group == group && (resource == "*" || r.resource == resource))
                        .map(|r| r.key_prefix.clone())
                        .collect()
                };
                if matched.is_empty() {
                    tracing::warn!(resource = %name, "encryption configuration names a resource skiff does not serve");
                }
                for p in matched {
                    if !taken.contains(&p) && !prefixes.contains(&p) {
                        prefixes.push(p);
                    }
                }
            }
            taken.extend(prefixes.iter().cloned());
            rules.push(Rule {
                resources: rc.resources.clone(),
                prefixes,
                providers,
            });
        }
        Ok(Transformers { rules })
    }

    /// The providers of the resource `key` belongs to, if configured.
    pub fn for_key(&self, key: &str) -> Option<&Providers> {
        self.rules
            .iter()
            .find(|r| r.prefixes.iter().any(|p| key.starts_with(p.as_str())))
            .map(|r| &r.providers)
    }

    /// Every configured key prefix with its providers.
    fn prefixes(&self) -> impl Iterator<Item = (&str, &Providers)> {
        self.rules
            .iter()
            .flat_map(|r| r.prefixes.iter().map(move |p| (p.as_str(), &r.providers)))
    }
}

/// The [`Store`] decorator.
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    transformers: Arc<Transformers>,
}

fn transform_error(key: &str, e: &TransformError) -> StoreError {
    StoreError::Backend(format!("unable to transform key {key:?}: {e}"))
}

impl EncryptedStore {
    pub fn new(inner: Arc<dyn Store>, transformers: Transformers) -> EncryptedStore {
        EncryptedStore {
            inner,
            transformers: Arc::new(transformers),
        }
    }

    /// The backend, whose values are as stored (encrypted).
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    fn encrypt(&self, key: &str, value: &[u8]) -> skiff_store::Result<Option<Vec<u8>>> {
        match self.transformers.for_key(key) {
            Some(p) => p
                .encrypt(key, value)
                .map(Some)
                .map_err(|e| transform_error(key, &e)),
            None => Ok(None),
        }
    }

    /// `kv` with its value decrypted, or as stored (logged) when it cannot be.
    fn decrypt_lenient(transformers: &Transformers, mut kv: KeyValue) -> KeyValue {
        if let Some(p) = transformers.for_key(&kv.key) {
            match p.decrypt(&kv.key, &kv.value) {
                Ok((plain, _)) => kv.value = plain,
                Err(e) => {
                    tracing::error!(key = %kv.key, error = %e, "unable to transform key: no configured provider decrypts it");
                }
            }
        }
        kv
    }

    /// Rewrites every value of the configured resources that the encrypting
    /// provider and key did not write (compare-and-swap on its revision, so a
    /// concurrent write wins). Stops at the first value that cannot be
    /// decrypted, naming it.
    pub async fn reencrypt(&self) -> skiff_store::Result<ReencryptReport> {
        let mut report = ReencryptReport::default();
        for (prefix, providers) in self.transformers.prefixes() {
            let mut after: Option<String> = None;
            loop {
                let page = self.inner.range(prefix, after.as_deref(), 500).await?;
                for kv in &page.kvs {
                    report.scanned += 1;
                    let (plain, stale) = providers
                        .decrypt(&kv.key, &kv.value)
                        .map_err(|e| transform_error(&kv.key, &e))?;
                    if !stale {
                        continue;
                    }
                    let stored = providers
                        .encrypt(&kv.key, &plain)
                        .map_err(|e| transform_error(&kv.key, &e))?;
                    match self.inner.update(&kv.key, stored, kv.mod_revision).await {
                        Ok(_) => report.rewritten += 1,
                        // Written (with the current provider) since we read it.
                        Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound(_)) => {
                            report.changed_meanwhile += 1
                        }
                        Err(e) => return Err(e),
                    }
                }
                match (page.more, page.kvs.last()) {
                    (true, Some(last)) => after = Some(last.key.clone()),
                    _ => break,
                }
            }
        }
        Ok(report)
    }

    /// Per configured entry: its resources, what encrypts, and how many
    /// stored values each provider/key wrote.
    pub async fn status(&self) -> skiff_store::Result<Vec<RuleStatus>> {
        let mut out = Vec::new();
        for rule in &self.transformers.rules {
            let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
            for prefix in &rule.prefixes {
                let mut after: Option<String> = None;
                loop {
                    let page = self.inner.range(prefix, after.as_deref(), 500).await?;
                    for kv in &page.kvs {
                        let by = rule
                            .providers
                            .written_by(&kv.value)
                            .unwrap_or_else(|| "unknown (no configured key)".into());
                        *counts.entry(by).or_default() += 1;
                    }
                    match (page.more, page.kvs.last()) {
                        (true, Some(last)) => after = Some(last.key.clone()),
                        _ => break,
                    }
                }
            }
            out.push(RuleStatus {
                resources: rule.resources.clone(),
                writer: rule.providers.writer(),
                counts: counts.into_iter().collect(),
            });
        }
        Ok(out)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReencryptReport {
    pub scanned: u64,
    pub rewritten: u64,
    pub changed_meanwhile: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleStatus {
    pub resources: Vec<String>,
    /// "aescbc/<key>" or "identity".
    pub writer: String,
    /// (provider/key, number of stored values it wrote).
    pub counts: Vec<(String, u64)>,
}

#[async_trait::async_trait]
impl Store for EncryptedStore {
    async fn get(&self, key: &str) -> skiff_store::Result<Option<KeyValue>> {
        let Some(mut kv) = self.inner.get(key).await? else {
            return Ok(None);
        };
        if let Some(p) = self.transformers.for_key(key) {
            let (plain, _) = p
                .decrypt(key, &kv.value)
                .map_err(|e| transform_error(key, &e))?;
            kv.value = plain;
        }
        Ok(Some(kv))
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> skiff_store::Result<RangeResult> {
        let mut r = self.inner.range(prefix, start_after, limit).await?;
        r.kvs = std::mem::take(&mut r.kvs)
            .into_iter()
            .map(|kv| Self::decrypt_lenient(&self.transformers, kv))
            .collect();
        Ok(r)
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> skiff_store::Result<KeyValue> {
        let Some(stored) = self.encrypt(key, &value)? else {
            return self.inner.create(key, value).await;
        };
        let mut kv = self.inner.create(key, stored).await?;
        kv.value = value;
        Ok(kv)
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: i64,
    ) -> skiff_store::Result<KeyValue> {
        let Some(stored) = self.encrypt(key, &value)? else {
            return self.inner.update(key, value, expected_revision).await;
        };
        let mut kv = self.inner.update(key, stored, expected_revision).await?;
        kv.value = value;
        Ok(kv)
    }

    async fn delete(
        &self,
        key: &str,
        expected_revision: i64,
    ) -> skiff_store::Result<(KeyValue, i64)> {
        let (kv, revision) = self.inner.delete(key, expected_revision).await?;
        Ok((Self::decrypt_lenient(&self.transformers, kv), revision))
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> skiff_store::Result<WatchStream> {
        let stream = self.inner.watch(prefix, from_revision).await?;
        let transformers = self.transformers.clone();
        Ok(Box::pin(stream.map(move |batch| {
            let batch = batch?;
            let events = batch
                .events
                .into_iter()
                .map(|ev| match ev {
                    Event::Put { kv, prev } => Event::Put {
                        kv: Self::decrypt_lenient(&transformers, kv),
                        prev: prev.map(|p| Self::decrypt_lenient(&transformers, p)),
                    },
                    Event::Delete { prev, revision } => Event::Delete {
                        prev: Self::decrypt_lenient(&transformers, prev),
                        revision,
                    },
                })
                .collect();
            Ok(WatchBatch {
                events,
                revision: batch.revision,
            })
        })))
    }

    async fn current_revision(&self) -> skiff_store::Result<i64> {
        self.inner.current_revision().await
    }

    async fn compact(&self, revision: i64) -> skiff_store::Result<()> {
        self.inner.compact(revision).await
    }

    async fn compacted_revision(&self) -> skiff_store::Result<i64> {
        self.inner.compacted_revision().await
    }
}
