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

/// What one client connection may hold, as ingress-nginx bounds it: a TLS
/// handshake and a request's headers in time (nginx's
/// `client_header_timeout` is 60 s, and the same timer closes an idle
/// keep-alive connection), at most `max_connections` open at once (its
/// `max-worker-connections`, 16,384); beyond that, new connections are
/// closed at accept. Proxied upgrades (WebSockets) are not timed.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(60),
            max_connections: 16_384,
        }
    }
}

async fn serve_io<I>(io: I, proxy: Arc<Proxy>, conn: Conn, watcher: Watcher, limits: Limits)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, conn).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(Duration::from_secs(20));
    let served = watcher
        .watch(builder.serve_connection_with_upgrades(io, service))
        .await;
    if let Err(e) = served {
        tracing::debug!(peer = %conn.peer, error = %e, "ingress connection ended with an error");
    }
}

struct Listening<'a> {
    tls: &'a TlsAcceptor,
    proxy: &'a Arc<Proxy>,
    graceful: &'a GracefulShutdown,
    open: &'a Arc<tokio::sync::Semaphore>,
    limits: Limits,
}

fn accepted(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
    scheme: Scheme,
    l: &Listening<'_>,
) -> bool {
    let (tcp, peer) = match accepted {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "ingress accept failed");
            return false;
        }
    };
    let Ok(permit) = l.open.clone().try_acquire_owned() else {
        tracing::warn!(%peer, max = l.limits.max_connections, "too many open ingress connections: closing a new one");
        return true;
    };
    let limits = l.limits;
    let _ = tcp.set_nodelay(true);
    let Ok(local) = tcp.local_addr() else {
        return true;
    };
    let conn = Conn {
        peer,
        local,
        scheme,
    };
    let proxy = l.proxy.clone();
    let watcher = l.graceful.watcher();
    match scheme {
        Scheme::Http => {
            tokio::spawn(async move {
                let _permit = permit;
                // hyper's header timer starts with a request's first bytes
                // (and after each response): a connection that never sends
                // one is closed here, as HTTPS ones are by the handshake
                // timeout.
                let mut first = [0u8; 1];
                if tokio::time::timeout(limits.header_read_timeout, tcp.peek(&mut first))
                    .await
                    .is_err()
                {
                    tracing::debug!(%peer, "no request in time: closing the connection");
                    return;
                }
                serve_io(TokioIo::new(tcp), proxy, conn, watcher, limits).await;
            });
        }
        Scheme::Https => {
            let tls = l.tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(limits.tls_handshake_timeout, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        serve_io(TokioIo::new(stream), proxy, conn, watcher, limits).await
                    }
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
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let tls = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let listening = Listening {
        tls: &tls,
        proxy: &proxy,
        graceful: &graceful,
        open: &open,
        limits,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let ok = tokio::select! {
            a = http.accept() => accepted(a, Scheme::Http, &listening),
            a = https.accept() => accepted(a, Scheme::Https, &listening),
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
