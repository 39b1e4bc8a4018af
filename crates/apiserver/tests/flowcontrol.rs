//! Overload control (robustness issue, item 2): a client that floods its
//! priority level gets 429s and waits in its own queue, another client of
//! the same level is served next, the admin is never held up, requests
//! time out, and watches are bounded per user.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams, PostParams, WatchParams};
use serde_json::json;
use skiff_testsupport::{TestServer, eventually};

/// A client impersonating `user` that sees 429s instead of retrying them.
async fn client(s: &TestServer, user: &str) -> kube::Client {
    let mut config = s.config_as(user, &[]).await;
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

async fn get(client: &kube::Client, path: &str) -> Result<String, kube::Error> {
    client
        .request_text(http::Request::get(path).body(Vec::new()).unwrap())
        .await
}

fn code(r: &Result<String, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(e)) => e.code,
        Err(e) => panic!("not an API answer: {e}"),
    }
}

/// The value of a global-default flow-control gauge on /metrics.
async fn gauge(s: &TestServer, name: &str) -> f64 {
    let text = get(&s.client, "/metrics").await.unwrap();
    let key = format!("{name}{{priority_level=\"global-default\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not on /metrics"))
}

async fn grant_admin(s: &TestServer, users: &[&str]) {
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(s.client.clone());
    let subjects: Vec<_> = users
        .iter()
        .map(|u| json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": u}))
        .collect();
    let crb = serde_json::from_value(json!({
        "metadata": {"name": "flood-test"},
        "roleRef": {"kind": "ClusterRole", "apiGroup": "rbac.authorization.k8s.io", "name": "cluster-admin"},
        "subjects": subjects,
    }))
    .unwrap();
    crbs.create(&PostParams::default(), &crb).await.unwrap();
    let noisy = client(s, users[0]).await;
    eventually("the grant", || async {
        code(&get(&noisy, "/api/v1/namespaces/default/configmaps").await)
            .eq(&200)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_flooding_user_waits_in_its_own_queue_and_gets_429s() {
    // One seat per priority level, five waiting requests per flow.
    let s = TestServer::start_with(|c| {
        c.flow_control.max_requests_inflight = 1;
        c.flow_control.max_mutating_requests_inflight = 0;
        c.flow_control.queue_length = 5;
    })
    .await;
    grant_admin(&s, &["noisy", "quiet"]).await;
    let (noisy, quiet) = (client(&s, "noisy").await, client(&s, "quiet").await);

    // The noisy user holds global-default's one seat for 3 s: a LIST that
    // waits for a revision the store will not reach, and times out.
    let started = Instant::now();
    let blocker = {
        let noisy = noisy.clone();
        tokio::spawn(async move {
            get(&noisy, "/api/v1/namespaces/default/configmaps?resourceVersion=999999999&resourceVersionMatch=NotOlderThan&timeout=3s").await
        })
    };
    eventually("the seat taken", || async {
        (gauge(&s, "apiserver_flowcontrol_current_executing_seats").await == 1.0).then_some(())
    })
    .await;
    // The admin (system:masters) is exempt: /metrics above answered, and so does this.
    get(&s.client, "/api/v1/namespaces").await.unwrap();

    // Eight more from the noisy user: five wait, three are refused at once.
    let served = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let (noisy, served) = (noisy.clone(), served.clone());
            tokio::spawn(async move {
                let r = get(&noisy, "/api/v1/namespaces/default/configmaps").await;
                if r.is_ok() {
                    served.fetch_add(1, Ordering::SeqCst);
                }
                code(&r)
            })
        })
        .collect();
    eventually("five queued", || async {
        (gauge(&s, "apiserver_flowcontrol_current_inqueue_requests").await == 5.0).then_some(())
    })
    .await;
    // The quiet user's request waits in a queue of its own.
    let quiet_req = {
        let (quiet, served) = (quiet.clone(), served.clone());
        tokio::spawn(async move {
            let r = get(&quiet, "/api/v1/namespaces/default/configmaps").await;
            (code(&r), served.load(Ordering::SeqCst))
        })
    };

    let blocked = blocker.await.unwrap();
    let Err(kube::Error::Api(e)) = blocked else {
        panic!("the blocking LIST should time out: {blocked:?}")
    };
    assert_eq!(
        (e.code, e.reason.as_str()),
        (504, "Timeout"),
        "{}",
        e.message
    );
    assert!(started.elapsed() >= Duration::from_secs(3));

    let (quiet_code, noisy_before) = quiet_req.await.unwrap();
    assert_eq!(quiet_code, 200);
    // Round robin: at most one of the noisy user's five went first.
    assert!(
        noisy_before <= 1,
        "{noisy_before} noisy requests went before"
    );
    let mut codes: Vec<u16> = Vec::new();
    for f in flood {
        codes.push(f.await.unwrap());
    }
    codes.sort();
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429, 429]);
    let text = get(&s.client, "/metrics").await.unwrap();
    assert!(
        text.contains(
            "apiserver_flowcontrol_rejected_requests_total{priority_level=\"global-default\"} 3"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_429_carries_retry_after() {
    let s = TestServer::start_with(|c| {
        c.flow_control.priority_and_fairness = false;
        c.flow_control.max_requests_inflight = 1;
    })
    .await;
    grant_admin(&s, &["noisy"]).await;
    let noisy = client(&s, "noisy").await;
    let blocker = {
        let noisy = noisy.clone();
        tokio::spawn(async move {
            get(
                &noisy,
                "/api/v1/namespaces/default/configmaps?resourceVersion=999999999&timeout=2s",
            )
            .await
        })
    };
    // Raw, to see the header.
    let refused = eventually("a refusal", || async {
        let req = http::Request::get("/api/v1/namespaces/default/configmaps")
            .body(Vec::new())
            .unwrap();
        let resp = noisy.send(req.map(kube::client::Body::from)).await.unwrap();
        (resp.status() == 429).then_some(resp)
    })
    .await;
    assert_eq!(refused.headers()["retry-after"], "1");
    let _ = blocker.await;
}

#[tokio::test]
async fn timeouts_are_read_as_go_durations() {
    let s = TestServer::start().await;
    let mut config = s.config().await;
    config.default_retry = false;
    let admin = kube::Client::try_from(config).unwrap();
    let r = get(&admin, "/api/v1/namespaces?timeout=soon").await;
    let Err(kube::Error::Api(e)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.code, 400);
    assert!(
        e.message
            .starts_with("invalid timeout specified in the request URL"),
        "{}",
        e.message
    );
    get(&admin, "/api/v1/namespaces?timeout=1m30s")
        .await
        .unwrap();
    // A LIST that cannot finish ends at its timeout with 504.
    let started = Instant::now();
    let r = get(
        &admin,
        "/api/v1/configmaps?resourceVersion=999999999&timeout=500ms",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    let Err(kube::Error::Api(e)) = r else {
        panic!("{r:?}")
    };
    assert_eq!((e.code, e.reason.as_str()), (504, "Timeout"));
}

#[tokio::test]
async fn watches_are_bounded_per_user_but_not_for_the_admin() {
    let s = TestServer::start_with(|c| c.flow_control.max_watches_per_user = 2).await;
    grant_admin(&s, &["watcher"]).await;
    let watcher = client(&s, "watcher").await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(watcher, "default");
    let w1 = cms.watch(&WatchParams::default(), "0").await.unwrap();
    let w2 = cms.watch(&WatchParams::default(), "0").await.unwrap();
    let Err(kube::Error::Api(e)) = cms.watch(&WatchParams::default(), "0").await else {
        panic!("a third watch should be refused")
    };
    assert_eq!(e.code, 429);
    let admin: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(s.client.clone(), "default");
    let mut admins = Vec::new();
    for _ in 0..3 {
        admins.push(admin.watch(&WatchParams::default(), "0").await.unwrap());
    }
    // A closed watch frees its place.
    drop(w1);
    eventually("the place freed", || async {
        cms.watch(&WatchParams::default(), "0")
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    drop(w2);
    // Lists are not watches.
    cms.list(&ListParams::default()).await.unwrap();
}
