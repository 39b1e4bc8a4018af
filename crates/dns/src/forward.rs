//! Forwarding of names outside the cluster zone to upstream resolvers
//! (as CoreDNS's forward plugin): UDP first, TCP when the answer comes back
//! truncated, each upstream in turn within a timeout.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The upstream resolvers and how long to wait for each.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// An unpredictable query ID for the upstream leg (so a spoofed answer has
/// to guess it), without pulling in a random number crate.
fn random_id() -> u16 {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (RandomState::new().hash_one(n) & 0xffff) as u16
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder { upstreams, timeout }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Sends `query` (a whole DNS message) upstream and returns the answer
    /// with the client's ID, or None when no upstream answered in time.
    pub async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        if query.len() < 12 {
            return None;
        }
        let client_id = [query[0], query[1]];
        for upstream in &self.upstreams {
            let id = random_id();
            let mut out = query.to_vec();
            out[..2].copy_from_slice(&id.to_be_bytes());
            match tokio::time::timeout(self.timeout, exchange(*upstream, &out, id)).await {
                Ok(Ok(mut answer)) => {
                    answer[..2].copy_from_slice(&client_id);
                    return Some(answer);
                }
                Ok(Err(e)) => tracing::debug!(%upstream, error = %e, "upstream failed"),
                Err(_) => tracing::debug!(%upstream, "upstream timed out"),
            }
        }
        None
    }
}

fn is_answer_to(buf: &[u8], id: u16) -> bool {
    buf.len() >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id && buf[2] & 0x80 != 0
}

async fn exchange(upstream: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        if !is_answer_to(&buf[..n], id) {
            continue;
        }
        if buf[2] & 0x02 != 0 {
            return exchange_tcp(upstream, query, id).await;
        }
        buf.truncate(n);
        return Ok(buf);
    }
}

async fn exchange_tcp(upstream: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    stream.write_all(&out).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    if !is_answer_to(&buf, id) {
        return Err(std::io::Error::other("answer does not match the query"));
    }
    Ok(buf)
}

/// The `nameserver` addresses of a resolv.conf.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            // An IPv6 address may carry a zone (fe80::1%eth0); drop it.
            words.next()?.split('%').next()?.parse().ok()
        })
        .collect()
}

/// Whether sending to `upstream` could reach this server itself: a
/// loopback upstream on a port we listen on from a loopback or wildcard
/// address, or one of our own listen addresses.
fn would_loop(upstream: &SocketAddr, listen: &[SocketAddr]) -> bool {
    listen.iter().any(|l| {
        l == upstream
            || (l.port() == upstream.port()
                && upstream.ip().is_loopback()
                && (l.ip().is_unspecified() || l.ip().is_loopback()))
    })
}

/// Upstreams from resolv.conf text, without those that would loop back
/// to `listen`.
pub fn upstreams_from(text: &str, listen: &[SocketAddr]) -> Vec<SocketAddr> {
    parse_resolv_conf(text)
        .into_iter()
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|u| !would_loop(u, listen))
        .collect()
}

/// The host's resolvers: /etc/resolv.conf, or systemd-resolved's list of
/// real upstreams when /etc/resolv.conf leaves none (its stub 127.0.0.53
/// would be dropped only if it loops).
pub fn host_upstreams(listen: &[SocketAddr]) -> Vec<SocketAddr> {
    for path in ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"] {
        let Ok(text) = std::fs::read_to_string(Path::new(path)) else {
            continue;
        };
        let upstreams = upstreams_from(&text, listen);
        if !upstreams.is_empty() {
            return upstreams;
        }
    }
    tracing::warn!("no usable upstream resolvers: names outside the cluster will fail");
    Vec::new()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resolv_conf_parsing_and_loop_filtering() {
        let text = "# comment\nsearch example.com\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\noptions ndots:1\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "127.0.0.53".parse::<IpAddr>().unwrap(),
                "10.0.0.2".parse().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        // Listening on the wildcard port 53: a loopback upstream is ourselves.
        let wildcard: Vec<SocketAddr> = vec!["0.0.0.0:53".parse().unwrap()];
        assert_eq!(
            upstreams_from(text, &wildcard),
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        // Listening on a node address only: systemd-resolved's stub is fine.
        let node: Vec<SocketAddr> = vec!["10.0.0.5:53".parse().unwrap()];
        assert_eq!(upstreams_from(text, &node).len(), 3);
    }
}
