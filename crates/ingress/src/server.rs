//! The listeners: HTTP on one port, HTTPS (SNI certificates, ALPN h2 and
//! http/1.1) on the other, HTTP/1.1 and HTTP/2 on both, upgrades allowed.
//! On shutdown they stop accepting and let open connections finish (for
//! a while).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::proxy::{Conn, Proxy, Scheme};

/// How long open connections may take to finish after shutdown.
const DRAIN: Duration = Duration::from_secs(10);

async fn serve_io<I>(io: I, proxy: Arc<Proxy>, conn: Conn, watcher: Watcher)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, conn).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let served = watcher
        .watch(builder.serve_connection_with_upgrades(io, service))
        .await;
    if let Err(e) = served {
        tracing::debug!(peer = %conn.peer, error = %e, "ingress connection ended with an error");
    }
}

fn accepted(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
    scheme: Scheme,
    tls: &TlsAcceptor,
    proxy: &Arc<Proxy>,
    graceful: &GracefulShutdown,
) -> bool {
    let (tcp, peer) = match accepted {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "ingress accept failed");
            return false;
        }
    };
    let _ = tcp.set_nodelay(true);
    let Ok(local) = tcp.local_addr() else {
        return true;
    };
    let conn = Conn {
        peer,
        local,
        scheme,
    };
    let proxy = proxy.clone();
    let watcher = graceful.watcher();
    match scheme {
        Scheme::Http => {
            tokio::spawn(serve_io(TokioIo::new(tcp), proxy, conn, watcher));
        }
        Scheme::Https => {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await {
                    Ok(Ok(stream)) => serve_io(TokioIo::new(stream), proxy, conn, watcher).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    }
    true
}

/// Serves both listeners until `shutdown`, then drains.
pub async fn serve(
    http: TcpListener,
    https: TcpListener,
    proxy: Arc<Proxy>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let tls = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let ok = tokio::select! {
            a = http.accept() => accepted(a, Scheme::Http, &tls, &proxy, &graceful),
            a = https.accept() => accepted(a, Scheme::Https, &tls, &proxy, &graceful),
            _ = &mut shutdown => break,
        };
        if !ok {
            // Out of file descriptors and the like: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop((http, https));
    let open = graceful.count();
    if open > 0 {
        tracing::info!(open, "ingress draining connections");
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("ingress connections still open after the drain period; closing them");
    }
}
