//! The Ingress controller against a real (in-process) API server, with
//! plain HTTP servers on this host's own address (not loopback, which the
//! API refuses in EndpointSlices as Kubernetes does) as the "pods" behind
//! the Services' EndpointSlices: host and path routing, round-robin, 404/502/503, TLS by
//! SNI with a Secret, h2 over ALPN, upgrades, live reload on an open
//! connection, status.loadBalancer and the default IngressClass.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, PostParams};
use serde_json::json;
use skiff_ingress::{Bound, Config};
use skiff_testsupport::{TestServer, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The "pods'" address: this host's source address towards its default
/// route (connecting a UDP socket sends nothing).
fn pod_ip() -> Ipv4Addr {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    s.connect((Ipv4Addr::new(203, 0, 113, 1), 9))
        .expect("this test needs a non-loopback address with a default route");
    match s.local_addr().unwrap().ip() {
        std::net::IpAddr::V4(ip) => ip,
        other => panic!("not an IPv4 address: {other}"),
    }
}

/// A "pod": answers `<name> <uri> host=.. xff=.. proto=.. xhost=..`, and
/// on `Upgrade: echo` switches protocols and echoes bytes prefixed with
/// its name.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind((pod_ip(), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |mut req: Request<Incoming>| async move {
                        if req.headers().get(UPGRADE).is_some_and(|v| v == "echo") {
                            let on = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                let mut io = TokioIo::new(on.await.unwrap());
                                let mut buf = [0u8; 64];
                                let n = io.read(&mut buf).await.unwrap();
                                io.write_all(format!("{name}:").as_bytes()).await.unwrap();
                                io.write_all(&buf[..n]).await.unwrap();
                            });
                            let resp = Response::builder()
                                .status(101)
                                .header(CONNECTION, "upgrade")
                                .header(UPGRADE, "echo");
                            return Ok::<_, Infallible>(
                                resp.body(Full::new(Bytes::new())).unwrap(),
                            );
                        }
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_string()
                        };
                        let body = format!(
                            "{name} {} host={} xff={} proto={} xhost={}",
                            req.uri(),
                            h("host"),
                            h("x-forwarded-for"),
                            h("x-forwarded-proto"),
                            h("x-forwarded-host")
                        );
                        Ok(Response::new(Full::new(Bytes::from(body))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn open<I>(io: I) -> Sender
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(sender: &mut Sender, host: &str, path: &str) -> (u16, String) {
    sender.ready().await.unwrap();
    let req = Request::builder()
        .uri(path)
        .header(HOST, host)
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    send(&mut open(TokioIo::new(tcp)).await, host, path).await
}

async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    ca: &rustls::pki_types::CertificateDer<'static>,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

fn obj<T: k8s_openapi::serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn slice(name: &str, service: &str, port_name: &str, port: u16) -> EndpointSlice {
    obj(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [pod_ip().to_string()], "conditions": {"ready": true}}],
    }))
}

fn route(path: &str, path_type: &str, service: &str, port: serde_json::Value) -> serde_json::Value {
    json!({"path": path, "pathType": path_type, "backend": {"service": {"name": service, "port": port}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_hosts_and_paths_to_endpoints_with_tls_and_live_reload() {
    let api = TestServer::start().await;
    let client = api.client.clone();
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(&pp, &obj(json!({"metadata": {"name": "web"}})))
        .await
        .unwrap();

    let (a1, a2, b1) = (
        backend("a1").await,
        backend("a2").await,
        backend("b1").await,
    );
    let dead = {
        let l = TcpListener::bind((pod_ip(), 0)).await.unwrap();
        l.local_addr().unwrap().port()
    };

    let services: Api<Service> = Api::namespaced(client.clone(), "web");
    for (name, ports) in [
        (
            "a",
            json!([{"name": "http", "port": 80, "targetPort": "http"}]),
        ),
        (
            "b",
            json!([{"name": "metrics", "port": 9100}, {"name": "web", "port": 8080, "targetPort": 8080}]),
        ),
        ("c", json!([{"port": 80}])),
        ("d", json!([{"port": 80}])),
    ] {
        services
            .create(
                &pp,
                &obj(json!({"metadata": {"name": name}, "spec": {"ports": ports}})),
            )
            .await
            .unwrap();
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "web");
    // The two "pods" of a resolved the named targetPort differently.
    slices
        .create(&pp, &slice("a-1", "a", "http", a1.port()))
        .await
        .unwrap();
    slices
        .create(&pp, &slice("a-2", "a", "http", a2.port()))
        .await
        .unwrap();
    slices
        .create(&pp, &slice("b-1", "b", "web", b1.port()))
        .await
        .unwrap();
    slices
        .create(&pp, &slice("d-1", "d", "", dead))
        .await
        .unwrap();

    // A test CA and a certificate for a.example.com in a TLS Secret.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ingress test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["a.example.com".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("a-tls".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("tls.crt", leaf.pem()),
                ("tls.key", leaf_key.serialize_pem()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.into_bytes())))
            .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), "web")
        .create(&pp, &secret)
        .await
        .unwrap();

    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "web");
    let main: Ingress = obj(json!({
        "metadata": {"name": "main"},
        "spec": {
            "ingressClassName": "skiff",
            "tls": [{"hosts": ["a.example.com"], "secretName": "a-tls"}],
            "rules": [
                {"host": "a.example.com", "http": {"paths": [route("/", "Prefix", "a", json!({"number": 80}))]}},
                {"host": "b.example.com", "http": {"paths": [
                    route("/", "Prefix", "b", json!({"name": "web"})),
                    route("/c", "Exact", "c", json!({"number": 80})),
                    route("/d", "Prefix", "d", json!({"number": 80})),
                ]}},
            ],
        },
    }));
    ingresses.create(&pp, &main).await.unwrap();
    let other: Ingress = obj(json!({
        "metadata": {"name": "not-ours"},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "n.example.com", "http": {"paths": [route("/", "Prefix", "b", json!({"number": 8080}))]}}]},
    }));
    ingresses.create(&pp, &other).await.unwrap();

    let config = Config {
        http: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        https: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        status_address: Some("10.11.12.13".into()),
        ..Config::default()
    };
    let bound = Bound::bind(config).await.unwrap();
    let (http, https) = (bound.http_addr().unwrap(), bound.https_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.serve(client.clone(), async move {
        let _ = stopped.await;
    }));

    // Routed by host, round-robin across both "pods" of a.
    let started = std::time::Instant::now();
    eventually("a.example.com to be routed", || async {
        (get(http, "a.example.com", "/").await.0 == 200).then_some(())
    })
    .await;
    eprintln!("first route served {:?} after start", started.elapsed());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (status, body) = get(http, "a.example.com", "/x").await;
        assert_eq!(status, 200);
        seen.insert(body.split(' ').next().unwrap().to_string());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a1", "a2"]);

    // A named service port; path and query passed on; forwarded headers.
    let (status, body) = get(http, "B.example.com:8080", "/x/y?q=1").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "b1 /x/y?q=1 host=B.example.com:8080 xff=127.0.0.1 proto=http xhost=B.example.com:8080"
    );
    // Exact /c only matches /c; c has no endpoints: 503; d's endpoint is down: 502.
    assert_eq!(get(http, "b.example.com", "/c").await.0, 503);
    assert!(
        get(http, "b.example.com", "/cc")
            .await
            .1
            .starts_with("b1 /cc")
    );
    assert_eq!(get(http, "b.example.com", "/d/e").await.0, 502);
    // No rule: 404; another class's Ingress is not served.
    assert_eq!(get(http, "z.example.com", "/").await.0, 404);
    assert_eq!(get(http, "n.example.com", "/").await.0, 404);

    // TLS by SNI with the Secret's certificate, over HTTP/1.1 and h2.
    let ca = ca_cert.der().clone();
    let tls = tls_connect(https, "a.example.com", &ca, b"http/1.1")
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], *leaf.der());
    let (status, body) = send(&mut open(TokioIo::new(tls)).await, "a.example.com", "/s").await;
    assert_eq!(status, 200);
    assert!(body.ends_with("proto=https xhost=a.example.com"), "{body}");
    let tls = tls_connect(https, "a.example.com", &ca, b"h2")
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = h2
        .send_request(
            Request::builder()
                .uri("https://a.example.com/h2")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains(" /h2 host=a.example.com "),
        "{body:?}"
    );
    // Names without a Secret get the self-signed fallback, which the test CA does not vouch for.
    assert!(
        tls_connect(https, "b.example.com", &ca, b"http/1.1")
            .await
            .is_err()
    );

    // Upgrades are relayed.
    let mut raw = TcpStream::connect(http).await.unwrap();
    raw.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            raw.read(&mut byte).await.unwrap(),
            1,
            "connection closed in the response head"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    raw.write_all(b"ping").await.unwrap();
    let mut echoed = vec![0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), raw.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert!(
        echoed == b"a1:ping" || echoed == b"a2:ping",
        "{}",
        String::from_utf8_lossy(&echoed)
    );

    // status.loadBalancer of the served Ingress, not of the other one.
    eventually("the ingress status", || {
        let ingresses = ingresses.clone();
        async move {
            let ing = ingresses.get("main").await.unwrap();
            let lb = ing.status?.load_balancer?.ingress?;
            (lb.len() == 1 && lb[0].ip.as_deref() == Some("10.11.12.13")).then_some(())
        }
    })
    .await;
    assert!(
        ingresses
            .get("not-ours")
            .await
            .unwrap()
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .is_none()
    );

    // The default IngressClass exists.
    let class = Api::<IngressClass>::all(client.clone())
        .get("skiff")
        .await
        .unwrap();
    assert_eq!(
        class.spec.unwrap().controller.as_deref(),
        Some("skiff.dev/ingress")
    );
    assert_eq!(
        class.metadata.annotations.unwrap()["ingressclass.kubernetes.io/is-default-class"],
        "true"
    );

    // Live reload: a.example.com moves to b; a connection opened before
    // the change stays open and sees the new routes.
    let mut kept = open(TokioIo::new(TcpStream::connect(http).await.unwrap())).await;
    assert!(
        send(&mut kept, "a.example.com", "/")
            .await
            .1
            .starts_with('a')
    );
    let mut moved = ingresses.get("main").await.unwrap();
    moved.spec.as_mut().unwrap().rules.as_mut().unwrap()[0] = obj(
        json!({"host": "a.example.com", "http": {"paths": [route("/", "Prefix", "b", json!({"name": "web"}))]}}),
    );
    let changed = std::time::Instant::now();
    ingresses.replace("main", &pp, &moved).await.unwrap();
    eventually("a.example.com to move to b", || async {
        get(http, "a.example.com", "/")
            .await
            .1
            .starts_with("b1")
            .then_some(())
    })
    .await;
    eprintln!("ingress update took effect within {:?}", changed.elapsed());
    assert!(
        send(&mut kept, "a.example.com", "/")
            .await
            .1
            .starts_with("b1")
    );

    // An endpoint change: a new ready "pod" for c.
    let c1 = backend("c1").await;
    slices
        .create(&pp, &slice("c-1", "c", "", c1.port()))
        .await
        .unwrap();
    eventually("c's endpoint", || async {
        get(http, "b.example.com", "/c")
            .await
            .1
            .starts_with("c1 /c")
            .then_some(())
    })
    .await;

    // A classless Ingress is ours while our class is the default.
    let classless: Ingress = obj(json!({
        "metadata": {"name": "classless"},
        "spec": {"rules": [{"host": "c.example.com", "http": {"paths": [route("/", "Prefix", "c", json!({"number": 80}))]}}]},
    }));
    ingresses.create(&pp, &classless).await.unwrap();
    eventually("the classless ingress", || async {
        get(http, "c.example.com", "/")
            .await
            .1
            .starts_with("c1")
            .then_some(())
    })
    .await;

    stop.send(()).unwrap();
    drop(kept);
    tokio::time::timeout(Duration::from_secs(15), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Security review D1 on the ingress listeners: connections beyond the
/// cap are closed at accept, and one that sends no request headers is
/// closed after the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_silent_ones_closed() {
    let s = TestServer::start().await;
    let start = |limits: skiff_ingress::server::Limits| {
        let client = s.client.clone();
        async move {
            let config = Config {
                http: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                https: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                create_default_class: false,
                limits,
                ..Config::default()
            };
            let bound = Bound::bind(config).await.unwrap();
            let http = bound.http_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let serving = tokio::spawn(bound.serve(client, async move {
                let _ = stopped.await;
            }));
            (http, stop, serving)
        }
    };
    // At most two connections, and a header timeout (60 s) far beyond
    // this test's waits.
    let (http, stop, serving) = start(skiff_ingress::server::Limits {
        max_connections: 2,
        ..Default::default()
    })
    .await;
    let a = TcpStream::connect(http).await.unwrap();
    let b = TcpStream::connect(http).await.unwrap();
    let mut c = TcpStream::connect(http).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest))
        .await
        .expect("the connection beyond the cap is closed at accept")
        .ok();
    // Closing them frees their places: a request is served (404: no
    // routes). Until the server has seen them close, a new connection may
    // still be refused, so the request is raw and may fail.
    drop((a, b));
    eventually("a place freed", || async {
        let mut conn = TcpStream::connect(http).await.ok()?;
        conn.write_all(b"GET / HTTP/1.1\r\nHost: nothing.example.com\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.ok()?;
        answer.starts_with(b"HTTP/1.1 404").then_some(())
    })
    .await;
    let _ = stop.send(());
    let _ = serving.await;

    // A short header timeout: a connection that sends nothing is closed.
    let (http, stop, serving) = start(skiff_ingress::server::Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let mut silent = TcpStream::connect(http).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut rest))
        .await
        .expect("a silent connection is closed after the header timeout")
        .ok();
    let _ = stop.send(());
    let _ = serving.await;
}
