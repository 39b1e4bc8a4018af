//! The DNS server: UDP and TCP listeners on the same addresses, answering
//! cluster names from the record set and forwarding the rest, within
//! [`Limits`]: the source ACL first (a UDP query from elsewhere is dropped,
//! a TCP connection from elsewhere closed when accepted), then a bounded
//! number of forwarded queries in flight (beyond: SERVFAIL without
//! spawning anything), of TCP connections, of queries and idle time per
//! connection, and of the UDP answer's size.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::DNSClass;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::Error;
use crate::acl::Acl;
use crate::forward::{Forwarder, Slot};
use crate::records::{Lookup, Records};
use crate::throttle::Throttle;

/// The UDP payload size we advertise in EDNS answers.
const EDNS_PAYLOAD: u16 = 1232;
/// The receive buffer of a UDP listener: a query longer is cut short and
/// answered FORMERR.
const UDP_QUERY_BUFFER: usize = 4096;

/// Who is answered and how much a client may hold (see [`crate::Config`],
/// whose fields these are, for the defaults).
#[derive(Debug, Clone)]
pub struct Limits {
    /// The sources answered.
    pub acl: Acl,
    /// Open TCP connections at most, per listening address.
    pub max_tcp_connections: usize,
    /// A TCP connection's idle and per-message read/write timeout.
    pub tcp_idle_timeout: Duration,
    /// Queries answered per TCP connection.
    pub max_tcp_queries: usize,
    /// The largest UDP answer (at least 512).
    pub max_udp_payload: u16,
}

impl Default for Limits {
    /// Every source; the limits' defaults.
    fn default() -> Limits {
        Limits {
            acl: Acl::allow_all(),
            max_tcp_connections: crate::DEFAULT_MAX_TCP_CONNECTIONS,
            tcp_idle_timeout: crate::DEFAULT_TCP_IDLE_TIMEOUT,
            max_tcp_queries: crate::DEFAULT_MAX_TCP_QUERIES,
            max_udp_payload: crate::DEFAULT_MAX_UDP_PAYLOAD,
        }
    }
}

/// The limits and the throttles of the log lines a flood would repeat,
/// shared by a server's listener tasks.
#[derive(Debug, Default)]
struct Shared {
    limits: Limits,
    denied: Throttle,
    tcp_full: Throttle,
}

impl Shared {
    /// Whether `peer` is answered (logging refusals now and then).
    fn allows(&self, peer: SocketAddr, proto: &'static str) -> bool {
        if self.limits.acl.allows(peer.ip()) {
            return true;
        }
        if let Some(held_back) = self.denied.hit() {
            tracing::debug!(%peer, proto, refused_since_last_line = held_back, "cluster DNS: ignoring a source outside the cluster");
        }
        false
    }
}

/// Answers queries: the record set for cluster names, the forwarder for
/// the rest.
#[derive(Debug, Clone)]
pub struct Handler {
    records: Records,
    forwarder: Arc<Forwarder>,
}

/// What to do with one incoming message.
enum Outcome {
    Reply(Vec<u8>),
    Forward(Message),
    Drop,
}

fn encode(msg: &Message) -> Option<Vec<u8>> {
    match msg.to_vec() {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::warn!(error = %e, "encoding a DNS answer");
            None
        }
    }
}

/// The SERVFAIL answer to `req`, encoded.
fn servfail(req: &Message) -> Option<Vec<u8>> {
    encode(&response_to(req, ResponseCode::ServFail))
}

fn response_to(req: &Message, code: ResponseCode) -> Message {
    let mut resp = Message::response(req.id, req.op_code);
    resp.metadata.recursion_desired = req.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.response_code = code;
    resp.add_queries(req.queries.iter().cloned());
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        resp.set_edns(edns);
    }
    resp
}

impl Handler {
    pub fn new(records: Records, forwarder: Forwarder) -> Handler {
        Handler {
            records,
            forwarder: Arc::new(forwarder),
        }
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Answers from the record set, or says the message must be forwarded.
    fn local(&self, buf: &[u8]) -> Outcome {
        let req = match Message::from_vec(buf) {
            Ok(m) => m,
            // A query (QR clear) we cannot parse: FORMERR with its ID.
            Err(_) => {
                let (Some(&[id0, id1, flags]), true) = (buf.get(..3), buf.len() >= 12) else {
                    return Outcome::Drop;
                };
                if flags & 0x80 != 0 {
                    return Outcome::Drop;
                }
                let mut resp = Message::error_msg(
                    u16::from_be_bytes([id0, id1]),
                    OpCode::Query,
                    ResponseCode::FormErr,
                );
                resp.metadata.recursion_available = true;
                return encode(&resp).map_or(Outcome::Drop, Outcome::Reply);
            }
        };
        if req.message_type != MessageType::Query {
            return Outcome::Drop;
        }
        if req.op_code != OpCode::Query {
            return encode(&response_to(&req, ResponseCode::NotImp))
                .map_or(Outcome::Drop, Outcome::Reply);
        }
        let [query] = req.queries.as_slice() else {
            return encode(&response_to(&req, ResponseCode::FormErr))
                .map_or(Outcome::Drop, Outcome::Reply);
        };
        if !matches!(query.query_class, DNSClass::IN | DNSClass::ANY) {
            return Outcome::Forward(req);
        }
        let lookup = self.records.lookup(&query.name, query.query_type);
        let mut resp = match lookup {
            Lookup::Forward => return Outcome::Forward(req),
            Lookup::Answer {
                answers,
                additionals,
            } => {
                let mut resp = response_to(&req, ResponseCode::NoError);
                resp.add_answers(answers);
                resp.add_additionals(additionals);
                resp
            }
            Lookup::NoData => {
                let mut resp = response_to(&req, ResponseCode::NoError);
                resp.add_authority(self.records.soa());
                resp
            }
            Lookup::NxDomain => {
                let mut resp = response_to(&req, ResponseCode::NXDomain);
                resp.add_authority(self.records.soa());
                resp
            }
        };
        resp.metadata.authoritative = true;
        encode(&resp).map_or(Outcome::Drop, Outcome::Reply)
    }

    async fn forward(&self, slot: &Slot, req: &Message, buf: &[u8]) -> Option<Vec<u8>> {
        match self.forwarder.forward(slot, buf).await {
            Some(answer) => Some(answer),
            None => servfail(req),
        }
    }

    /// The whole answer to one message (None: no answer is due). A name
    /// to forward gets SERVFAIL at once when the forwarder is at its bound.
    pub async fn handle(&self, buf: &[u8]) -> Option<Vec<u8>> {
        match self.local(buf) {
            Outcome::Reply(bytes) => Some(bytes),
            Outcome::Drop => None,
            Outcome::Forward(req) => match self.forwarder.try_slot() {
                Some(slot) => self.forward(&slot, &req, buf).await,
                None => servfail(&req),
            },
        }
    }
}

/// Fits an answer to the UDP payload size the query allows, but at most
/// `cap` (and never less than 512), setting TC (so the client retries over
/// TCP) when it does not fit.
fn fit_udp(query: &[u8], answer: Vec<u8>, cap: u16) -> Vec<u8> {
    if answer.len() <= 512 {
        return answer;
    }
    let max = Message::from_vec(query)
        .map(|m| m.max_payload().min(cap).max(512))
        .unwrap_or(512);
    if answer.len() <= usize::from(max) {
        return answer;
    }
    match Message::from_vec(&answer) {
        Ok(msg) => encode(&msg.truncate()).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Bound UDP sockets and TCP listeners, not yet serving.
pub struct Server {
    udp: Vec<Arc<UdpSocket>>,
    tcp: Vec<TcpListener>,
    limits: Limits,
}

impl Server {
    /// Binds UDP and TCP on `addr`; with port 0, both get the same free port.
    pub async fn bind(addr: SocketAddr) -> Result<Server, Error> {
        Server::bind_all(&[addr]).await
    }

    /// Binds UDP and TCP on each address.
    pub async fn bind_all(addrs: &[SocketAddr]) -> Result<Server, Error> {
        let mut server = Server {
            udp: Vec::new(),
            tcp: Vec::new(),
            limits: Limits::default(),
        };
        for addr in addrs {
            let (udp, tcp) = bind_pair(*addr).await?;
            server.udp.push(Arc::new(udp));
            server.tcp.push(tcp);
        }
        Ok(server)
    }

    /// Serves within `limits` (the default: every source, the default
    /// limits).
    pub fn with_limits(mut self, limits: Limits) -> Server {
        self.limits = limits;
        self
    }

    /// The bound addresses (UDP and TCP share each).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// The first bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addrs().into_iter().next()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        handler: Handler,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let shared = Arc::new(Shared {
            limits: self.limits,
            ..Shared::default()
        });
        let mut tasks = JoinSet::new();
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        for socket in &self.udp {
            for _ in 0..workers {
                tasks.spawn(serve_udp(socket.clone(), handler.clone(), shared.clone()));
            }
        }
        for listener in self.tcp {
            tasks.spawn(serve_tcp(listener, handler.clone(), shared.clone()));
        }
        tracing::info!(addrs = ?self.udp.iter().filter_map(|s| s.local_addr().ok()).collect::<Vec<_>>(), "cluster DNS serving");
        tokio::select! {
            () = shutdown => {}
            Some(res) = tasks.join_next() => {
                // The listener loops only end by failing.
                tasks.shutdown().await;
                return match res {
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(())) => Err(Error::Io(std::io::Error::other("a DNS listener stopped"))),
                    Err(e) => Err(Error::Io(std::io::Error::other(format!("a DNS listener panicked: {e}")))),
                };
            }
        }
        tasks.shutdown().await;
        Ok(())
    }
}

async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), Error> {
    let bind_err = |source| Error::Bind { addr, source };
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr).await.map_err(bind_err)?;
        let tcp = TcpListener::bind(addr).await.map_err(bind_err)?;
        return Ok((udp, tcp));
    }
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await.map_err(bind_err)?;
        let port_addr = udp.local_addr().map_err(bind_err)?;
        match TcpListener::bind(port_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(bind_err(
        last.unwrap_or_else(|| std::io::Error::other("no free port")),
    ))
}

async fn send_udp(socket: &UdpSocket, peer: SocketAddr, answer: &[u8]) {
    if let Err(e) = socket.send_to(answer, peer).await {
        tracing::debug!(%peer, error = %e, "udp send");
    }
}

async fn serve_udp(
    socket: Arc<UdpSocket>,
    handler: Handler,
    shared: Arc<Shared>,
) -> Result<(), Error> {
    let cap = shared.limits.max_udp_payload;
    let mut buf = vec![0u8; UDP_QUERY_BUFFER];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "udp receive");
                continue;
            }
        };
        // Outside the ACL: no answer at all, nothing to reflect.
        if !shared.allows(peer, "udp") {
            continue;
        }
        let Some(query) = buf.get(..n) else {
            continue;
        };
        match handler.local(query) {
            Outcome::Drop => {}
            Outcome::Reply(answer) => {
                send_udp(&socket, peer, &fit_udp(query, answer, cap)).await;
            }
            Outcome::Forward(req) => {
                // Over the bound: SERVFAIL now, nothing spawned.
                let Some(slot) = handler.forwarder.try_slot() else {
                    if let Some(answer) = servfail(&req) {
                        send_udp(&socket, peer, &fit_udp(query, answer, cap)).await;
                    }
                    continue;
                };
                let query = query.to_vec();
                let socket = socket.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    if let Some(answer) = handler.forward(&slot, &req, &query).await {
                        send_udp(&socket, peer, &fit_udp(&query, answer, cap)).await;
                    }
                });
            }
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    handler: Handler,
    shared: Arc<Shared>,
) -> Result<(), Error> {
    let open = Arc::new(Semaphore::new(
        shared
            .limits
            .max_tcp_connections
            .min(Semaphore::MAX_PERMITS),
    ));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Outside the ACL, or over the cap: closed at once (dropped).
                    if !shared.allows(peer, "tcp") {
                        continue;
                    }
                    let Ok(permit) = open.clone().try_acquire_owned() else {
                        if let Some(held_back) = shared.tcp_full.hit() {
                            tracing::warn!(%peer, max = shared.limits.max_tcp_connections, refused_since_last_warning = held_back, "cluster DNS: too many open TCP connections; closing a new one");
                        }
                        continue;
                    };
                    let (handler, shared) = (handler.clone(), shared.clone());
                    conns.spawn(async move {
                        let _permit = permit;
                        serve_conn(stream, handler, &shared.limits).await;
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "tcp accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Answers length-prefixed queries on one connection: at most
/// `max_tcp_queries`, each to be read (from the wait for its first byte)
/// and its answer written within `tcp_idle_timeout`. One buffer each way
/// for the whole connection.
async fn serve_conn(mut stream: TcpStream, handler: Handler, limits: &Limits) {
    let idle = limits.tcp_idle_timeout;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for _ in 0..limits.max_tcp_queries {
        let len = match tokio::time::timeout(idle, stream.read_u16()).await {
            Ok(Ok(len)) => len,
            _ => return,
        };
        buf.clear();
        buf.resize(usize::from(len), 0);
        if tokio::time::timeout(idle, stream.read_exact(&mut buf))
            .await
            .map_or(true, |r| r.is_err())
        {
            return;
        }
        let Some(answer) = handler.handle(&buf).await else {
            continue;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            continue;
        };
        out.clear();
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&answer);
        if tokio::time::timeout(idle, stream.write_all(&out))
            .await
            .map_or(true, |r| r.is_err())
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::net::{IpAddr, Ipv4Addr};
    use tokio::time::Instant;

    /// A name the record set answers itself (NXDOMAIN), and one it forwards.
    const CLUSTER_NAME: &str = "nope.default.svc.cluster.local.";
    const OTHER_NAME: &str = "example.com.";
    /// Longer than any guard in these tests: only the limit under test
    /// closes a connection.
    const HOUR: Duration = Duration::from_secs(3600);

    fn query(id: u16, name: &str, payload: Option<u16>) -> Vec<u8> {
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        if let Some(payload) = payload {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            msg.set_edns(edns);
        }
        msg.to_vec().unwrap()
    }

    /// An upstream that never answers, and a forwarder to it waiting `HOUR`.
    async fn silent_forwarder(max_concurrent: usize) -> (Forwarder, UdpSocket) {
        let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let f = Forwarder::new(vec![silent.local_addr().unwrap()], HOUR)
            .with_max_concurrent(max_concurrent);
        (f, silent)
    }

    /// Serves on 127.0.0.1:0 until the sender is dropped.
    async fn serve(
        limits: Limits,
        forwarder: Forwarder,
    ) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let server = Server::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap()
            .with_limits(limits);
        let addr = server.local_addr().unwrap();
        let records = Records::new("cluster.local", 5).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(Handler::new(records, forwarder), async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    fn no_upstreams() -> Forwarder {
        Forwarder::new(vec![], Duration::from_secs(1))
    }

    /// One UDP answer within `wait`, or None.
    async fn udp_answer(socket: &UdpSocket, wait: Duration) -> Option<Message> {
        let mut buf = vec![0u8; 65535];
        let n = tokio::time::timeout(wait, socket.recv(&mut buf))
            .await
            .ok()?
            .unwrap();
        Some(Message::from_vec(&buf[..n]).unwrap())
    }

    /// Sends one query on `stream` and reads its answer: None when the
    /// server closed the connection instead.
    async fn tcp_query(stream: &mut TcpStream, id: u16) -> Option<Message> {
        let q = query(id, CLUSTER_NAME, None);
        let mut out = (q.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        // A write to a connection the server already closed may fail.
        stream.write_all(&out).await.ok()?;
        let len = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
            .await
            .expect("neither an answer nor a close")
            .ok()?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.ok()?;
        Some(Message::from_vec(&buf).unwrap())
    }

    /// Whether the server closes `stream` (EOF or reset) within `wait`.
    async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(wait, stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// An answer of `n` A records to `q`.
    fn big_answer(q: &[u8], n: u8) -> Vec<u8> {
        let req = Message::from_vec(q).unwrap();
        let mut resp = response_to(&req, ResponseCode::NoError);
        for i in 0..n {
            resp.add_answer(Record::from_rdata(
                Name::from_ascii(OTHER_NAME).unwrap(),
                60,
                RData::A(A::new(10, 9, 0, i)),
            ));
        }
        resp.to_vec().unwrap()
    }

    /// Review N1: the client's EDNS size (up to 65535) no longer sizes the
    /// UDP answer; the cap does, and never below 512.
    #[test]
    fn udp_answers_are_capped_whatever_edns_claims() {
        let q = query(1, OTHER_NAME, Some(65535));
        let answer = big_answer(&q, 100);
        assert!(
            answer.len() > 1232 && answer.len() < 4096,
            "{}",
            answer.len()
        );

        let fitted = fit_udp(&q, answer.clone(), 1232);
        assert!(fitted.len() <= 1232);
        let msg = Message::from_vec(&fitted).unwrap();
        assert!(msg.truncation);
        assert!(msg.answers.is_empty());
        assert_eq!(msg.id, 1);

        // Under the cap and the client's size: whole.
        assert_eq!(fit_udp(&q, answer.clone(), 4096), answer);
        // The client's smaller size still counts.
        let q1232 = query(1, OTHER_NAME, Some(1232));
        assert!(
            Message::from_vec(&fit_udp(&q1232, answer.clone(), 4096))
                .unwrap()
                .truncation
        );
        // Without EDNS: 512; a cap below 512 is taken as 512.
        let small = big_answer(&q, 30);
        assert!(small.len() > 512 && small.len() < 1232, "{}", small.len());
        let plain = query(1, OTHER_NAME, None);
        assert!(
            Message::from_vec(&fit_udp(&plain, small.clone(), 1232))
                .unwrap()
                .truncation
        );
        let tiny = big_answer(&q, 20);
        assert!(tiny.len() <= 512, "{}", tiny.len());
        assert_eq!(fit_udp(&q, tiny.clone(), 100), tiny);
        assert!(
            Message::from_vec(&fit_udp(&q, small, 100))
                .unwrap()
                .truncation
        );
    }

    /// Review N1: a source outside the ACL gets no UDP answer and its TCP
    /// connection is closed at accept; one inside gets both answered.
    #[tokio::test(start_paused = true)]
    async fn sources_outside_the_acl_are_ignored() {
        let elsewhere = Limits {
            acl: Acl::new(&[(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8)]).unwrap(),
            tcp_idle_timeout: HOUR,
            ..Limits::default()
        };
        let (addr, _stop) = serve(elsewhere, no_upstreams()).await;
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        client.connect(addr).await.unwrap();
        client.send(&query(1, CLUSTER_NAME, None)).await.unwrap();
        // Garbage gets no FORMERR either.
        client.send(&[0u8; 12]).await.unwrap();
        assert!(udp_answer(&client, Duration::from_secs(10)).await.is_none());
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut stream, Duration::from_secs(10)).await);

        let loopback = Limits {
            acl: Acl::new(&[
                (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8),
                (IpAddr::V4(Ipv4Addr::LOCALHOST), 8),
            ])
            .unwrap(),
            tcp_idle_timeout: HOUR,
            ..Limits::default()
        };
        let (addr, _stop) = serve(loopback, no_upstreams()).await;
        client.connect(addr).await.unwrap();
        client.send(&query(2, CLUSTER_NAME, None)).await.unwrap();
        let resp = udp_answer(&client, Duration::from_secs(10)).await.unwrap();
        assert_eq!((resp.id, resp.response_code), (2, ResponseCode::NXDomain));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let resp = tcp_query(&mut stream, 3).await.unwrap();
        assert_eq!((resp.id, resp.response_code), (3, ResponseCode::NXDomain));
    }

    /// Review N1: with the forwarder at its bound, a UDP query to forward
    /// is answered SERVFAIL at once (the upstream would take an hour); the
    /// slot comes back when the forwarded query ends.
    #[tokio::test(start_paused = true)]
    async fn udp_forwards_beyond_the_bound_are_servfail_at_once() {
        let (forwarder, _silent) = silent_forwarder(1).await;
        let (addr, _stop) = serve(Limits::default(), forwarder.clone()).await;
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        client.connect(addr).await.unwrap();
        client.send(&query(1, OTHER_NAME, None)).await.unwrap();
        client.send(&query(2, OTHER_NAME, None)).await.unwrap();
        let start = Instant::now();
        let resp = udp_answer(&client, Duration::from_secs(10)).await.unwrap();
        assert_eq!((resp.id, resp.response_code), (2, ResponseCode::ServFail));
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(forwarder.in_flight(), 1);
        // Cluster names are not forwarded: answered while the bound is reached.
        client.send(&query(3, CLUSTER_NAME, None)).await.unwrap();
        let resp = udp_answer(&client, Duration::from_secs(10)).await.unwrap();
        assert_eq!((resp.id, resp.response_code), (3, ResponseCode::NXDomain));
        // The first one fails when the upstream's hour is up, and gives its slot back.
        let resp = udp_answer(&client, 2 * HOUR).await.unwrap();
        assert_eq!((resp.id, resp.response_code), (1, ResponseCode::ServFail));
        assert!(start.elapsed() >= HOUR);
        assert_eq!(forwarder.in_flight(), 0);
        client.send(&query(4, OTHER_NAME, None)).await.unwrap();
        assert!(udp_answer(&client, Duration::from_secs(10)).await.is_none());
        assert_eq!(forwarder.in_flight(), 1);
    }

    /// The same bound on the TCP path (`Handler::handle`).
    #[tokio::test(start_paused = true)]
    async fn handle_answers_servfail_at_the_bound() {
        let (forwarder, _silent) = silent_forwarder(1).await;
        let handler = Handler::new(Records::new("cluster.local", 5).unwrap(), forwarder.clone());
        let held = forwarder.try_slot().unwrap();
        let start = Instant::now();
        let answer = handler.handle(&query(7, OTHER_NAME, None)).await.unwrap();
        let resp = Message::from_vec(&answer).unwrap();
        assert_eq!((resp.id, resp.response_code), (7, ResponseCode::ServFail));
        assert_eq!(start.elapsed(), Duration::ZERO);
        // With the slot free, the query waits for the upstream (an hour).
        drop(held);
        let waited = tokio::time::timeout(
            Duration::from_secs(60),
            handler.handle(&query(8, OTHER_NAME, None)),
        )
        .await;
        assert!(waited.is_err());
    }

    /// Review N1: at most `max_tcp_connections` are open; one more is
    /// closed at accept; a closed one makes room.
    #[tokio::test(start_paused = true)]
    async fn tcp_connections_are_capped() {
        let limits = Limits {
            max_tcp_connections: 2,
            tcp_idle_timeout: HOUR,
            ..Limits::default()
        };
        let (addr, _stop) = serve(limits, no_upstreams()).await;
        let mut c1 = TcpStream::connect(addr).await.unwrap();
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        assert!(tcp_query(&mut c1, 1).await.is_some());
        assert!(tcp_query(&mut c2, 2).await.is_some());
        let mut c3 = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut c3, Duration::from_secs(60)).await);
        // The first two are still served.
        assert!(tcp_query(&mut c1, 3).await.is_some());
        drop(c1);
        // The server notices the close on its own time: try a few times.
        let mut answered = false;
        for attempt in 0..20 {
            let mut c4 = TcpStream::connect(addr).await.unwrap();
            if tcp_query(&mut c4, 4).await.is_some() {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
        }
        assert!(answered, "no room after a connection closed");
        assert!(tcp_query(&mut c2, 5).await.is_some());
    }

    /// Review N1: a connection without a query for `tcp_idle_timeout` is
    /// closed, one that sent part of a query too; before that, it is served.
    #[tokio::test(start_paused = true)]
    async fn idle_tcp_connections_are_closed() {
        let idle = Duration::from_secs(10);
        let limits = Limits {
            tcp_idle_timeout: idle,
            ..Limits::default()
        };
        let (addr, _stop) = serve(limits, no_upstreams()).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(idle / 2).await;
        assert!(tcp_query(&mut c, 1).await.is_some());
        let answered = Instant::now();
        assert!(closed_within(&mut c, 10 * idle).await);
        let after = answered.elapsed();
        assert!(
            after >= idle && after < idle + Duration::from_secs(1),
            "{after:?}"
        );

        // A length prefix promising 100 bytes, then 10 of them.
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&100u16.to_be_bytes()).await.unwrap();
        c.write_all(&[0u8; 10]).await.unwrap();
        let start = Instant::now();
        assert!(closed_within(&mut c, 10 * idle).await);
        assert!(start.elapsed() >= idle);
    }

    /// Review N1: a connection is closed after `max_tcp_queries` answers.
    #[tokio::test(start_paused = true)]
    async fn tcp_queries_per_connection_are_capped() {
        let limits = Limits {
            max_tcp_queries: 2,
            tcp_idle_timeout: HOUR,
            ..Limits::default()
        };
        let (addr, _stop) = serve(limits, no_upstreams()).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert!(tcp_query(&mut c, 1).await.is_some());
        assert!(tcp_query(&mut c, 2).await.is_some());
        assert!(tcp_query(&mut c, 3).await.is_none());
    }
}
