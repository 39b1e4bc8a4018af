//! Connection hygiene (security review D1): a client that never finishes
//! its TLS handshake, or never finishes a request's headers, is
//! disconnected; beyond the connection cap new connections are closed
//! at once, and the server serves again as soon as some go away.

use std::sync::Arc;
use std::time::Duration;

use skiff_testsupport::TestServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

async fn server() -> TestServer {
    server_with_handshake_timeout(Duration::from_secs(1)).await
}

async fn server_with_handshake_timeout(handshake: Duration) -> TestServer {
    TestServer::start_with(|c| {
        c.limits.tls_handshake_timeout = handshake;
        c.limits.header_read_timeout = Duration::from_secs(1);
        c.limits.max_connections = 32;
    })
    .await
}

fn port(s: &TestServer) -> u16 {
    s.running.addr.port()
}

/// Whether the server closes `stream` within 30 s (it reads EOF or an error).
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn a_client_that_never_handshakes_is_disconnected() {
    let s = server().await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port(&s))).await.unwrap();
    assert!(closed_by_server(&mut tcp).await);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let s = server().await;
    let ca = std::fs::read(s.dir.path().join("tls/server-ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(der.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port(&s))).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    // Slowloris: a request line and one header, then nothing.
    tls.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(closed_by_server(&mut tls).await);
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_closed_until_some_end() {
    // Handshakes may take a minute here: only the cap closes a connection
    // within the 30 s `closed_by_server` waits.
    let s = server_with_handshake_timeout(Duration::from_secs(120)).await;
    let mut idle = Vec::new();
    for _ in 0..32 {
        idle.push(TcpStream::connect(("127.0.0.1", port(&s))).await.unwrap());
    }
    // The 33rd is closed at accept (the cap), not left waiting.
    let mut extra = TcpStream::connect(("127.0.0.1", port(&s))).await.unwrap();
    assert!(closed_by_server(&mut extra).await);
    // Once the idle ones go, clients are served again.
    drop(idle);
    skiff_testsupport::eventually("the server to serve again", || {
        let client = s.client.clone();
        async move { client.apiserver_version().await.ok() }
    })
    .await;
}
