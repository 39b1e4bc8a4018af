//! Leader election against a real in-process API server.

use std::time::Duration;

use skiff_runtime::leader::{LeaderConfig, LeaderElector};
use skiff_testsupport::TestServer;

fn fast() -> LeaderConfig {
    LeaderConfig {
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn one_leader_at_a_time_and_failover() {
    let s = TestServer::start().await;
    let mut a = LeaderElector::new(s.client.clone(), "kube-system", "test-lock", "a", fast());
    let mut b = LeaderElector::new(s.client.clone(), "kube-system", "test-lock", "b", fast());
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert!(a.try_acquire_or_renew().await.unwrap(), "the holder renews");
    // a stops renewing: b takes over once the lease has not changed for its duration.
    let mut took_over = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if b.try_acquire_or_renew().await.unwrap() {
            took_over = true;
            break;
        }
    }
    assert!(took_over, "b never acquired the expired lease");
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "a must not reclaim a lease b renews"
    );
    let lease: k8s_openapi::api::coordination::v1::Lease =
        kube::Api::namespaced(s.client.clone(), "kube-system")
            .get("test-lock")
            .await
            .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
}
