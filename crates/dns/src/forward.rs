//! Forwarding of names outside the cluster zone to upstream resolvers
//! (as CoreDNS's forward plugin): UDP first, TCP when the answer comes back
//! truncated, each upstream in turn within a timeout.
//!
//! At most [`Forwarder::with_max_concurrent`] queries are forwarded at once
//! (CoreDNS forward's `max_concurrent`, 1000 by default): a caller must
//! hold a [`Slot`] to forward, and gets none beyond the bound, so that a
//! flood of queries for names whose servers never answer cannot pile up
//! tasks, sockets and buffers. Each forwarded query has one UDP socket of
//! its own (a fresh source port, so a spoofed answer must guess it and the
//! ID) and one receive buffer of [`UPSTREAM_UDP_BUFFER`] bytes, reused for
//! each upstream in turn.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::throttle::Throttle;

/// The receive buffer for an upstream's UDP answer. An answer that fills
/// it may have been cut short by the kernel, so it is asked again over
/// TCP, as for an answer with TC set.
pub const UPSTREAM_UDP_BUFFER: usize = 4096;

/// The upstream resolvers, how long to wait for each, and the bound on
/// queries in flight. Clones share the bound.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    max_concurrent: usize,
    slots: Arc<Semaphore>,
    full: Arc<Throttle>,
}

/// A place among the forwarded queries in flight, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// An unpredictable query ID for the upstream leg (so a spoofed answer has
/// to guess it), without pulling in a random number crate.
fn random_id() -> u16 {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (RandomState::new().hash_one(n) & 0xffff) as u16
}

/// The ID of a DNS message (its first two bytes).
fn id_of(msg: &[u8]) -> Option<u16> {
    match msg {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// Writes `id` into a message's first two bytes.
fn set_id(msg: &mut [u8], id: u16) {
    if let Some(head) = msg.get_mut(..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
}

impl Forwarder {
    /// Forwarding to `upstreams`, `timeout` for each, at most
    /// [`crate::DEFAULT_MAX_CONCURRENT_FORWARDS`] queries in flight.
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder {
            upstreams,
            timeout,
            max_concurrent: 0,
            slots: Arc::new(Semaphore::new(0)),
            full: Arc::default(),
        }
        .with_max_concurrent(crate::DEFAULT_MAX_CONCURRENT_FORWARDS)
    }

    /// At most `n` queries in flight (0: nothing is forwarded).
    pub fn with_max_concurrent(mut self, n: usize) -> Forwarder {
        let n = n.min(Semaphore::MAX_PERMITS);
        self.max_concurrent = n;
        self.slots = Arc::new(Semaphore::new(n));
        self
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The bound on queries in flight.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// How many queries are in flight (slots held).
    pub fn in_flight(&self) -> usize {
        self.max_concurrent
            .saturating_sub(self.slots.available_permits())
    }

    /// A place for one more query in flight, or None when the bound is
    /// reached (the caller answers SERVFAIL; logged at most every 10 s).
    pub fn try_slot(&self) -> Option<Slot> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Some(Slot { _permit: permit }),
            Err(_) => {
                if let Some(held_back) = self.full.hit() {
                    tracing::warn!(
                        max_concurrent = self.max_concurrent,
                        refused_since_last_warning = held_back,
                        "cluster DNS: too many forwarded queries in flight; answering SERVFAIL"
                    );
                }
                None
            }
        }
    }

    /// Sends `query` (a whole DNS message) upstream and returns the answer
    /// with the client's ID, or None when no upstream answered in time.
    /// `_slot` is the caller's place among the queries in flight.
    pub async fn forward(&self, _slot: &Slot, query: &[u8]) -> Option<Vec<u8>> {
        if query.len() < 12 {
            return None;
        }
        let client_id = id_of(query)?;
        let mut out = query.to_vec();
        let mut buf = vec![0u8; UPSTREAM_UDP_BUFFER];
        for upstream in &self.upstreams {
            let id = random_id();
            set_id(&mut out, id);
            match tokio::time::timeout(self.timeout, exchange(*upstream, &out, id, &mut buf)).await
            {
                Ok(Ok(mut answer)) => {
                    set_id(&mut answer, client_id);
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
    buf.len() >= 12 && id_of(buf) == Some(id) && buf.get(2).is_some_and(|b| b & 0x80 != 0)
}

/// One query to one upstream over UDP (TCP when the answer is truncated
/// or fills `buf`).
async fn exchange(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    buf: &mut [u8],
) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    loop {
        let n = socket.recv(buf).await?;
        let Some(answer) = buf.get(..n) else {
            continue;
        };
        if !is_answer_to(answer, id) {
            continue;
        }
        let truncated = answer.get(2).is_some_and(|b| b & 0x02 != 0);
        if truncated || n >= buf.len() {
            drop(socket);
            return exchange_tcp(upstream, query, id).await;
        }
        return Ok(answer.to_vec());
    }
}

async fn exchange_tcp(upstream: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
    let mut out = Vec::with_capacity(query.len().saturating_add(2));
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

    /// Review N1: at most `max_concurrent` slots are held at once; a slot
    /// comes back when dropped; clones share the bound.
    #[test]
    fn slots_are_bounded() {
        let f = Forwarder::new(vec![], Duration::from_secs(1)).with_max_concurrent(2);
        assert_eq!(f.max_concurrent(), 2);
        let a = f.try_slot().unwrap();
        let b = f.clone().try_slot().unwrap();
        assert_eq!(f.in_flight(), 2);
        assert!(f.try_slot().is_none());
        drop(a);
        assert_eq!(f.in_flight(), 1);
        let _c = f.try_slot().unwrap();
        assert!(f.try_slot().is_none());
        drop(b);
        assert!(f.try_slot().is_some());
        // The default is CoreDNS's.
        let f = Forwarder::new(vec![], Duration::from_secs(1));
        assert_eq!(f.max_concurrent(), 1000);
        let none = Forwarder::new(vec![], Duration::from_secs(1)).with_max_concurrent(0);
        assert!(none.try_slot().is_none());
    }

    /// An upstream's UDP answer that fills the receive buffer may have been
    /// cut short: it is asked again over TCP, and the whole answer comes
    /// back with the client's ID.
    #[tokio::test]
    async fn an_answer_filling_the_buffer_is_asked_again_over_tcp() {
        // A UDP port whose TCP twin is free too.
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
            if let Ok(tcp) = tokio::net::TcpListener::bind(udp.local_addr().unwrap()).await {
                break (udp, tcp);
            }
        };
        let upstream = udp.local_addr().unwrap();
        // An answer (QR set) bigger than the buffer, echoing the query's ID.
        let answer_to = |query: &[u8], len: usize| {
            let mut a = vec![0u8; len];
            a[..2].copy_from_slice(&query[..2]);
            a[2] = 0x80;
            a
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
            let a = answer_to(&buf[..n], UPSTREAM_UDP_BUFFER + 1000);
            udp.send_to(&a, peer).await.unwrap();
        });
        tokio::spawn(async move {
            let (mut s, _) = tcp.accept().await.unwrap();
            let len = s.read_u16().await.unwrap();
            let mut q = vec![0u8; usize::from(len)];
            s.read_exact(&mut q).await.unwrap();
            let a = answer_to(&q, 6000);
            s.write_all(&(a.len() as u16).to_be_bytes()).await.unwrap();
            s.write_all(&a).await.unwrap();
        });
        let f = Forwarder::new(vec![upstream], Duration::from_secs(5));
        let slot = f.try_slot().unwrap();
        let mut query = vec![0u8; 12];
        query[..2].copy_from_slice(&0xabcd_u16.to_be_bytes());
        let answer = f.forward(&slot, &query).await.unwrap();
        assert_eq!(answer.len(), 6000);
        assert_eq!(answer[..2], [0xab, 0xcd]);
    }
}
