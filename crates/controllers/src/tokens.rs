//! The service-account tokens controller of kube-controller-manager
//! (pkg/controller/serviceaccount/tokens_controller.go), for the legacy
//! token Secrets users still make by hand (Kubernetes no longer makes them
//! for every account, LegacyServiceAccountTokenNoAutoGeneration): a Secret
//! of type `kubernetes.io/service-account-token` naming a service account
//! in its `kubernetes.io/service-account.name` annotation gets a
//! non-expiring token signed with the service-account key, the cluster CA
//! (`ca.crt`) and its `namespace`, and the account's uid annotation. A
//! token Secret whose account does not exist, or is another account of the
//! same name, is deleted, so an account's token Secrets go with it. The
//! API server accepts such a token only while its Secret holds it.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use serde_json::json;
use skiff_api::jwt::EsKey;

use crate::ctrlutil::informer::ObjKey;
use crate::loopkit::{self, Outcome, Store, WorkQueue};

const CONTROLLER: &str = "serviceaccount-token";
pub const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
pub const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
pub const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

fn annotation<'a>(secret: &'a Secret, key: &str) -> &'a str {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map_or("", String::as_str)
}

/// What a token Secret lacks, given its account's uid and the cluster CA:
/// the patch that completes it, or None when it is complete. The token is
/// made only when there is none (an existing one stays valid).
pub fn completion(
    secret: &Secret,
    sa_uid: &str,
    root_ca: Option<&str>,
    sign: impl FnOnce() -> Option<String>,
) -> Option<serde_json::Value> {
    let ns = secret.metadata.namespace.as_deref().unwrap_or_default();
    let data = secret.data.clone().unwrap_or_default();
    let has = |k: &str, want: &[u8]| data.get(k).is_some_and(|v| v.0 == want);
    let needs_token = data.get("token").is_none_or(|t| t.0.is_empty());
    let needs_ca = root_ca.is_some_and(|ca| !has("ca.crt", ca.as_bytes()));
    let needs_ns = !has("namespace", ns.as_bytes());
    let needs_uid = annotation(secret, UID_ANNOTATION) != sa_uid;
    if !(needs_token || needs_ca || needs_ns || needs_uid) {
        return None;
    }
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut new_data = BTreeMap::new();
    if needs_token {
        new_data.insert("token", b64(sign()?.as_bytes()));
    }
    if let Some(ca) = root_ca.filter(|_| needs_ca) {
        new_data.insert("ca.crt", b64(ca.as_bytes()));
    }
    if needs_ns {
        new_data.insert("namespace", b64(ns.as_bytes()));
    }
    Some(json!({
        // A compare-and-swap: a concurrent change comes back as an event.
        "metadata": {
            "resourceVersion": secret.metadata.resource_version,
            "annotations": {UID_ANNOTATION: sa_uid},
        },
        "data": new_data,
    }))
}

pub async fn run(ctx: crate::Context) {
    let Some(key) = ctx.config.service_account_key.clone() else {
        tracing::info!("no service-account key: token Secrets are not filled in");
        return;
    };
    let queue = Arc::new(WorkQueue::<ObjKey>::new());
    let q = queue.clone();
    let (secrets, secret_informer) = loopkit::informer(
        Api::<Secret>::all(ctx.client.clone()),
        watcher::Config::default().fields(&format!("type={TOKEN_TYPE}")),
        move |ev, _| {
            if let Some(s) = loopkit::event_object(ev) {
                q.add(ObjKey::of(s));
            }
        },
    );
    // An account's change or deletion revisits its namespace's token
    // Secrets (few: they are made by hand).
    let q = queue.clone();
    let by_account = secrets.clone();
    let (accounts, account_informer) =
        ctx.informers
            .get::<ServiceAccount>()
            .informer(move |ev, _| {
                let Some(sa) = loopkit::event_object(ev) else {
                    return;
                };
                let ns = sa.metadata.namespace.as_deref().unwrap_or_default();
                let name = sa.metadata.name.as_deref().unwrap_or_default();
                for s in by_account.list_namespace(ns) {
                    if annotation(&s, NAME_ANNOTATION) == name {
                        q.add(ObjKey::of(s.as_ref()));
                    }
                }
            });
    let client = ctx.client.clone();
    let root_ca = ctx.config.root_ca.clone();
    let worker = async {
        if !loopkit::wait_ready(&secrets).await || !loopkit::wait_ready(&accounts).await {
            return;
        }
        loop {
            let k = queue.next().await;
            let outcome = crate::loopkit::guarded(
                CONTROLLER,
                &k,
                reconcile(&client, &secrets, &accounts, &key, root_ca.as_deref(), &k),
            )
            .await;
            queue.finish(CONTROLLER, k, outcome);
        }
    };
    tokio::join!(secret_informer, account_informer, worker);
}

async fn reconcile(
    client: &kube::Client,
    secrets: &Store<Secret>,
    accounts: &Store<ServiceAccount>,
    key: &EsKey,
    root_ca: Option<&str>,
    k: &ObjKey,
) -> Outcome {
    let Some(secret) = secrets.get(k) else {
        return Ok(None);
    };
    if secret.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let ns = secret.metadata.namespace.clone().unwrap_or_default();
    let secret_name = secret.metadata.name.clone().unwrap_or_default();
    let sa_name = annotation(&secret, NAME_ANNOTATION).to_string();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // The account, from the cache or (just created) from the API server.
    let account = match accounts.get(&ObjKey::new(&ns, &sa_name)) {
        Some(a) => Some((*a).clone()),
        None => {
            Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                .get_opt(&sa_name)
                .await?
        }
    };
    let wanted_uid = annotation(&secret, UID_ANNOTATION);
    let sa_uid = account
        .as_ref()
        .and_then(|a| a.metadata.uid.clone())
        .filter(|uid| wanted_uid.is_empty() || wanted_uid == uid);
    let Some(sa_uid) = sa_uid else {
        // No such account (any more): the Secret goes, this very one.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&secret_name, &params).await {
            Ok(_) => {
                tracing::info!(secret = %secret_name, namespace = %ns, account = %sa_name, "deleted the token Secret of a missing service account")
            }
            Err(e) if loopkit::is_status(&e, 404) || loopkit::is_status(&e, 409) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(None);
    };
    let sign = || {
        key.sign(&skiff_api::jwt::legacy_claims(
            &ns,
            &sa_name,
            &sa_uid,
            &secret_name,
        ))
    };
    let Some(patch) = completion(&secret, &sa_uid, root_ca, sign) else {
        return Ok(None);
    };
    match api
        .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(secret = %secret_name, namespace = %ns, "filled in a service-account token Secret")
        }
        Err(e) if loopkit::is_status(&e, 404) || loopkit::is_status(&e, 409) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(v: serde_json::Value) -> Secret {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn fills_in_what_a_token_secret_lacks() {
        let s = secret(
            json!({"metadata": {"name": "t", "namespace": "ns", "resourceVersion": "7",
            "annotations": {NAME_ANNOTATION: "sa"}}, "type": TOKEN_TYPE}),
        );
        let patch = completion(&s, "u1", Some("CA"), || Some("jwt".into())).unwrap();
        assert_eq!(patch["metadata"]["annotations"][UID_ANNOTATION], "u1");
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        assert_eq!(patch["data"]["token"], "and0");
        assert_eq!(patch["data"]["ca.crt"], "Q0E=");
        assert_eq!(patch["data"]["namespace"], "bnM=");
        // Complete: nothing to do; a token is never replaced.
        let done = secret(json!({"metadata": {"name": "t", "namespace": "ns",
            "annotations": {NAME_ANNOTATION: "sa", UID_ANNOTATION: "u1"}}, "type": TOKEN_TYPE,
            "data": {"token": "and0", "ca.crt": "Q0E=", "namespace": "bnM="}}));
        assert_eq!(
            completion(&done, "u1", Some("CA"), || panic!("no new token")),
            None
        );
        let new_ca = completion(&done, "u1", Some("CA2"), || panic!("no new token")).unwrap();
        assert_eq!(new_ca["data"], json!({"ca.crt": "Q0Ey"}));
    }
}
