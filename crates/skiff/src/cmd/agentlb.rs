//! The agent-side load balancer, as k3s's agent has: a TCP proxy on
//! 127.0.0.1 in front of every API server the agent knows. Each new
//! connection goes to the current server if it answers, else to the next
//! healthy one in the order given (which becomes current); a health check
//! (TCP connect) moves off a dead current server and closes the connections
//! still open to it, so that clients (watches) reconnect through a healthy
//! one. TLS passes through untouched: the agent's client verifies the
//! server's certificate, which names 127.0.0.1 on every skiff server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
const HEALTH_PERIOD: Duration = Duration::from_secs(2);

/// `host:port` of a server URL (`https://host:6443`; port 443 when absent).
pub fn backend_of(url: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| anyhow::anyhow!("server URL {url:?} is not a URL"))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow::anyhow!("server URL {url:?} has no host"))?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    Ok(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

struct Backend {
    addr: String,
    healthy: AtomicBool,
}

struct Shared {
    backends: Vec<Backend>,
    /// The index of the current server.
    current: watch::Sender<usize>,
}

impl Shared {
    /// Dial order: the current server, then the healthy others in the given
    /// order, then the unhealthy ones as a last resort.
    fn order(&self) -> Vec<usize> {
        let cur = *self.current.borrow();
        let n = self.backends.len();
        let mut out = vec![cur];
        out.extend(
            (0..n).filter(|i| *i != cur && self.backends[*i].healthy.load(Ordering::Relaxed)),
        );
        out.extend(
            (0..n).filter(|i| *i != cur && !self.backends[*i].healthy.load(Ordering::Relaxed)),
        );
        out
    }

    async fn dial(&self) -> Option<(usize, TcpStream)> {
        for i in self.order() {
            let b = &self.backends[i];
            match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&b.addr)).await {
                Ok(Ok(s)) => {
                    b.healthy.store(true, Ordering::Relaxed);
                    self.switch_to(i);
                    return Some((i, s));
                }
                Ok(Err(e)) => {
                    tracing::debug!(server = %b.addr, error = %e, "API server does not answer");
                    b.healthy.store(false, Ordering::Relaxed);
                }
                Err(_) => b.healthy.store(false, Ordering::Relaxed),
            }
        }
        None
    }

    fn switch_to(&self, i: usize) {
        let changed = self.current.send_if_modified(|c| {
            if *c == i {
                return false;
            }
            *c = i;
            true
        });
        if changed {
            tracing::info!(server = %self.backends[i].addr, "agent load balancer: switched API server");
        }
    }

    /// Probe every server; leave a dead current server for the first healthy one.
    async fn check(&self) {
        for b in &self.backends {
            let ok = matches!(
                tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&b.addr)).await,
                Ok(Ok(_))
            );
            b.healthy.store(ok, Ordering::Relaxed);
        }
        let cur = *self.current.borrow();
        if !self.backends[cur].healthy.load(Ordering::Relaxed)
            && let Some(i) =
                (0..self.backends.len()).find(|i| self.backends[*i].healthy.load(Ordering::Relaxed))
        {
            self.switch_to(i);
        }
    }
}

/// A running load balancer.
pub struct LoadBalancer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LoadBalancer {
    /// Listen on `bind` (port 0 picks one) in front of `servers` (URLs).
    pub async fn start(bind: SocketAddr, servers: &[String]) -> anyhow::Result<LoadBalancer> {
        let backends = servers
            .iter()
            .map(|s| {
                Ok(Backend {
                    addr: backend_of(s)?,
                    healthy: AtomicBool::new(true),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!backends.is_empty(), "no API server to balance");
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("listen on {bind}"))?;
        let addr = listener
            .local_addr()
            .with_context(|| format!("listen on {bind}"))?;
        let (current, _) = watch::channel(0usize);
        let shared = Arc::new(Shared { backends, current });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        let health_shared = shared.clone();
        let health = tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEALTH_PERIOD).await;
                health_shared.check().await;
            }
        });
        tracing::info!(%addr, servers = ?shared.backends.iter().map(|b| b.addr.as_str()).collect::<Vec<_>>(), "agent load balancer listening");
        Ok(LoadBalancer {
            addr,
            shared,
            tasks: vec![accept, health],
        })
    }

    /// The server new connections go to now.
    pub fn current(&self) -> String {
        self.shared.backends[*self.shared.current.borrow()]
            .addr
            .clone()
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "agent load balancer: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let Some((i, upstream)) = shared.dial().await else {
                tracing::warn!(%peer, "agent load balancer: no API server answers");
                return;
            };
            proxy(client, upstream, i, shared.current.subscribe()).await;
        });
    }
}

/// Copy both ways until either side closes, or until the current server
/// changes away from this connection's.
async fn proxy(
    mut client: TcpStream,
    mut upstream: TcpStream,
    index: usize,
    mut current: watch::Receiver<usize>,
) {
    let moved = async {
        loop {
            if current.changed().await.is_err() {
                // The balancer is gone: keep copying.
                std::future::pending::<()>().await;
            }
            if *current.borrow() != index {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        () = moved => {
            let _ = client.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    /// A backend answering every connection with its name.
    async fn named(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(name.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    async fn ask(lb: SocketAddr) -> std::io::Result<String> {
        let mut s = TcpStream::connect(lb).await?;
        s.write_all(b"?").await?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf[..n]).to_string())
    }

    #[test]
    fn server_urls() {
        assert_eq!(
            backend_of("https://10.0.0.1:6443").unwrap(),
            "10.0.0.1:6443"
        );
        assert_eq!(backend_of("https://cp.example").unwrap(), "cp.example:443");
        assert_eq!(backend_of("https://[::1]:6443").unwrap(), "[::1]:6443");
        assert!(backend_of("not a url").is_err());
    }

    #[tokio::test]
    async fn traffic_moves_to_the_next_server_when_one_dies() {
        let (a, a_task) = named("a").await;
        let (b, _b_task) = named("b").await;
        let lb = LoadBalancer::start(
            "127.0.0.1:0".parse().unwrap(),
            &[format!("https://{a}"), format!("https://{b}")],
        )
        .await
        .unwrap();
        assert_eq!(ask(lb.addr).await.unwrap(), "a");
        // A long-lived connection (a watch) through the first server.
        let mut open = TcpStream::connect(lb.addr).await.unwrap();
        open.write_all(b"?").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(open.read(&mut buf).await.unwrap(), 1);

        a_task.abort();
        let _ = a_task.await;
        // The listener is closed: new connections go to b, which becomes current.
        assert_eq!(ask(lb.addr).await.unwrap(), "b");
        assert_eq!(lb.current(), b.to_string());
        // The connection still open to a is closed so that its client reconnects.
        let n = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(ask(lb.addr).await.unwrap(), "b");
    }

    #[tokio::test]
    async fn the_health_check_leaves_a_dead_current_server() {
        let (a, a_task) = named("a").await;
        let (b, _b_task) = named("b").await;
        let lb = LoadBalancer::start(
            "127.0.0.1:0".parse().unwrap(),
            &[format!("https://{a}"), format!("https://{b}")],
        )
        .await
        .unwrap();
        a_task.abort();
        let _ = a_task.await;
        lb.shared.check().await;
        assert_eq!(lb.current(), b.to_string());
        assert!(!lb.shared.backends[0].healthy.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn no_server_answering_closes_the_connection() {
        let dead = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let lb = LoadBalancer::start("127.0.0.1:0".parse().unwrap(), &[format!("https://{dead}")])
            .await
            .unwrap();
        assert!(ask(lb.addr).await.map_or(true, |s| s.is_empty()));
    }
}
