//! The API server's identity Lease and the garbage collection of the
//! expired identity Leases of servers that are gone.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::json;
use skiff_apiserver::identity;
use skiff_testsupport::{TestServer, eventually};

#[tokio::test]
async fn each_server_publishes_and_renews_its_identity_lease() {
    let s = TestServer::start().await;
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), "kube-system");
    let me = s.running.server.identity.clone();
    let lease = eventually("the identity Lease", || async {
        leases.get_opt(&me.lease_name).await.unwrap()
    })
    .await;
    assert!(me.lease_name.starts_with("apiserver-"));
    let labels = lease.metadata.labels.clone().unwrap();
    assert_eq!(
        labels
            .get("apiserver.kubernetes.io/identity")
            .map(String::as_str),
        Some("kube-apiserver")
    );
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(me.holder.as_str()));
    assert_eq!(spec.lease_duration_seconds, Some(3600));
    let first = spec.renew_time.unwrap();

    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(20);
    identity::renew(&s.running.server, &me, later)
        .await
        .unwrap();
    let renewed = eventually("the renewal", || async {
        let l = leases.get(&me.lease_name).await.unwrap();
        l.spec.and_then(|s| s.renew_time).filter(|t| *t != first)
    })
    .await;
    assert!(renewed.0 > first.0);
}

#[tokio::test]
async fn expired_identity_leases_of_other_servers_are_collected() {
    let s = TestServer::start().await;
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), "kube-system");
    let me = s.running.server.identity.clone();
    eventually("the identity Lease", || async {
        leases.get_opt(&me.lease_name).await.unwrap()
    })
    .await;
    let make = |name: &str, renew: &str, identity_label: bool| -> Lease {
        let mut v = json!({"metadata": {"name": name}, "spec": {"holderIdentity": format!("{name}_x"), "leaseDurationSeconds": 3600, "renewTime": renew}});
        if identity_label {
            v["metadata"]["labels"] = json!({"apiserver.kubernetes.io/identity": "kube-apiserver"});
        }
        serde_json::from_value(v).unwrap()
    };
    let now = jiff::Timestamp::now();
    let old = (now - jiff::SignedDuration::from_hours(2))
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let fresh = now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    for l in [
        make("apiserver-gone", &old, true),
        make("apiserver-alive", &fresh, true),
        make("not-an-identity", &old, false),
    ] {
        leases.create(&PostParams::default(), &l).await.unwrap();
    }
    s.running.server.cache.sync().await.unwrap();
    // Our own Lease is never collected, even judged from far in the future.
    let deleted = identity::collect_garbage(&s.running.server, &me, now)
        .await
        .unwrap();
    assert_eq!(deleted, vec!["apiserver-gone".to_string()]);
    assert!(leases.get_opt("apiserver-gone").await.unwrap().is_none());
    assert!(leases.get_opt("apiserver-alive").await.unwrap().is_some());
    assert!(leases.get_opt("not-an-identity").await.unwrap().is_some());
    let far = now + jiff::SignedDuration::from_hours(3);
    let deleted = identity::collect_garbage(&s.running.server, &me, far)
        .await
        .unwrap();
    assert_eq!(deleted, vec!["apiserver-alive".to_string()]);
    assert!(leases.get_opt(&me.lease_name).await.unwrap().is_some());
}
