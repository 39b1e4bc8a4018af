//! The decorator as a store: the conformance suite through it, ciphertext in
//! the backend, rotation and re-encryption, undecryptable values.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use skiff_store::{Store, conformance};
use skiff_store_encryption::{EncryptedStore, EncryptionConfiguration, ResourceRef, Transformers};
use skiff_store_sqlite::{SqliteOptions, SqliteStore};

fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let options = SqliteOptions {
        compact_interval: None,
        checkpoint_interval: None,
        ..SqliteOptions::default()
    };
    Arc::new(SqliteStore::open_with(&dir.path().join("state.db"), options).unwrap())
}

fn catalog(prefix: &str) -> Vec<ResourceRef> {
    vec![
        ResourceRef {
            group: String::new(),
            resource: "secrets".into(),
            key_prefix: prefix.into(),
        },
        ResourceRef {
            group: String::new(),
            resource: "configmaps".into(),
            key_prefix: "/registry/configmaps/".into(),
        },
    ]
}

fn encrypted(inner: &Arc<dyn Store>, config: &EncryptionConfiguration) -> EncryptedStore {
    EncryptedStore::new(
        inner.clone(),
        Transformers::new(config, &catalog("/registry/secrets/")).unwrap(),
    )
}

/// Every check of the store contract holds through the decorator when it
/// encrypts every key the suite writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_through_encryption() {
    let dir = tempfile::tempdir().unwrap();
    let inner = sqlite(&dir);
    let config = EncryptionConfiguration::generate().unwrap();
    let store = Arc::new(EncryptedStore::new(
        inner.clone(),
        Transformers::new(&config, &catalog("/skiff-conformance/")).unwrap(),
    ));
    conformance::run_all(store).await;
    // And the backend holds only ciphertext.
    let raw = inner.range("/skiff-conformance/", None, 0).await.unwrap();
    assert!(!raw.kvs.is_empty());
    for kv in raw.kvs {
        assert!(
            kv.value.starts_with(b"k8s:enc:aescbc:v1:aescbckey-"),
            "{}",
            kv.key
        );
    }
}

#[tokio::test]
async fn configured_resources_are_ciphertext_in_the_backend_only() {
    let dir = tempfile::tempdir().unwrap();
    let inner = sqlite(&dir);
    let store = encrypted(&inner, &EncryptionConfiguration::generate().unwrap());
    let secret = br#"{"kind":"Secret","data":{"p":"c2VjcmV0LXZhbHVl"}}"#.to_vec();
    let kv = store
        .create("/registry/secrets/default/s", secret.clone())
        .await
        .unwrap();
    assert_eq!(kv.value, secret);
    store
        .create(
            "/registry/configmaps/default/c",
            b"{\"kind\":\"ConfigMap\"}".to_vec(),
        )
        .await
        .unwrap();
    let raw = inner
        .get("/registry/secrets/default/s")
        .await
        .unwrap()
        .unwrap();
    assert!(raw.value.starts_with(b"k8s:enc:aescbc:v1:"));
    assert!(!raw.value.windows(8).any(|w| w == b"c2VjcmV0"));
    assert_eq!(
        inner
            .get("/registry/configmaps/default/c")
            .await
            .unwrap()
            .unwrap()
            .value,
        b"{\"kind\":\"ConfigMap\"}"
    );
    // get, range, update, watch and delete all see the plain value.
    assert_eq!(
        store
            .get("/registry/secrets/default/s")
            .await
            .unwrap()
            .unwrap()
            .value,
        secret
    );
    let listed = store.range("/registry/", None, 0).await.unwrap();
    assert_eq!(listed.kvs.len(), 2);
    assert_eq!(listed.kvs[1].value, secret);
    let mut watch = conformance::Watcher::start(&store, "/registry/secrets/", 0).await;
    let updated = br#"{"kind":"Secret","data":{"p":"bmV3"}}"#.to_vec();
    store
        .update(
            "/registry/secrets/default/s",
            updated.clone(),
            kv.mod_revision,
        )
        .await
        .unwrap();
    match watch.next().await {
        skiff_store::Event::Put { kv, prev } => {
            assert_eq!(kv.value, updated);
            assert_eq!(prev.unwrap().value, secret);
        }
        other => panic!("unexpected {other:?}"),
    }
    let (deleted, _) = store
        .delete("/registry/secrets/default/s", 0)
        .await
        .unwrap();
    assert_eq!(deleted.value, updated);
}

#[tokio::test]
async fn rotation_reencrypts_every_secret_with_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let inner = sqlite(&dir);
    // Written before encryption was on: plain.
    inner
        .create("/registry/secrets/default/old-plain", b"{\"n\":0}".to_vec())
        .await
        .unwrap();
    let mut config = EncryptionConfiguration::generate().unwrap();
    let first = encrypted(&inner, &config);
    for i in 1..=3 {
        first
            .create(
                &format!("/registry/secrets/default/s{i}"),
                format!("{{\"n\":{i}}}").into_bytes(),
            )
            .await
            .unwrap();
    }
    let old_config = config.clone();
    let new_key = config.rotate().unwrap();
    let rotated = encrypted(&inner, &config);
    // The new key encrypts; the old one still decrypts.
    rotated
        .create("/registry/secrets/default/s4", b"{\"n\":4}".to_vec())
        .await
        .unwrap();
    let raw = inner
        .get("/registry/secrets/default/s4")
        .await
        .unwrap()
        .unwrap();
    assert!(
        raw.value
            .starts_with(format!("k8s:enc:aescbc:v1:{new_key}:").as_bytes())
    );
    assert_eq!(
        rotated
            .get("/registry/secrets/default/s1")
            .await
            .unwrap()
            .unwrap()
            .value,
        b"{\"n\":1}"
    );
    let status = rotated.status().await.unwrap();
    assert_eq!(status[0].writer, format!("aescbc/{new_key}"));
    assert_eq!(status[0].counts.iter().map(|(_, n)| n).sum::<u64>(), 5);
    let report = rotated.reencrypt().await.unwrap();
    assert_eq!((report.scanned, report.rewritten), (5, 4));
    // Everything is under the new key now: dropping the old keys loses nothing.
    config.drop_old_keys();
    let pruned = encrypted(&inner, &config);
    let raw = inner.range("/registry/secrets/", None, 0).await.unwrap();
    for kv in &raw.kvs {
        assert!(
            kv.value
                .starts_with(format!("k8s:enc:aescbc:v1:{new_key}:").as_bytes()),
            "{}",
            kv.key
        );
        let plain = pruned.get(&kv.key).await.unwrap().unwrap();
        assert!(plain.value.starts_with(b"{\"n\":"));
    }
    assert_eq!(
        pruned.status().await.unwrap()[0].counts,
        vec![(format!("aescbc/{new_key}"), 5)]
    );
    // The old configuration cannot read what the new key wrote: an error, not garbage.
    let old = encrypted(&inner, &old_config);
    let e = old
        .get("/registry/secrets/default/s1")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unable to transform key \"/registry/secrets/default/s1\"")
            && e.contains("no matching key was found"),
        "{e}"
    );
    // A second pass has nothing to do.
    assert_eq!(pruned.reencrypt().await.unwrap().rewritten, 0);
}

#[tokio::test]
async fn undecryptable_values_are_errors_on_get_and_passed_on_by_range() {
    let dir = tempfile::tempdir().unwrap();
    let inner = sqlite(&dir);
    let writer = encrypted(&inner, &EncryptionConfiguration::generate().unwrap());
    writer
        .create("/registry/secrets/default/s", b"{}".to_vec())
        .await
        .unwrap();
    // Another cluster's key.
    let reader = encrypted(&inner, &EncryptionConfiguration::generate().unwrap());
    let e = reader.get("/registry/secrets/default/s").await.unwrap_err();
    assert!(matches!(e, skiff_store::StoreError::Backend(_)), "{e}");
    // range keeps going (the watch cache skips the undecodable value).
    let r = reader.range("/registry/secrets/", None, 0).await.unwrap();
    assert!(r.kvs[0].value.starts_with(b"k8s:enc:aescbc:v1:"));
    // re-encryption stops and names the key rather than losing it.
    let e = reader.reencrypt().await.unwrap_err().to_string();
    assert!(e.contains("/registry/secrets/default/s"), "{e}");
}
