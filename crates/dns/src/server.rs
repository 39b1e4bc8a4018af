//! The DNS server: UDP and TCP listeners on the same addresses, answering
//! cluster names from the record set and forwarding the rest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::DNSClass;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

use crate::Error;
use crate::forward::Forwarder;
use crate::records::{Lookup, Records};

/// How long an idle TCP connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The UDP payload size we advertise in EDNS answers.
const EDNS_PAYLOAD: u16 = 1232;

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
            Err(_) if buf.len() >= 12 && buf[2] & 0x80 == 0 => {
                let mut resp = Message::error_msg(
                    u16::from_be_bytes([buf[0], buf[1]]),
                    OpCode::Query,
                    ResponseCode::FormErr,
                );
                resp.metadata.recursion_available = true;
                return encode(&resp).map_or(Outcome::Drop, Outcome::Reply);
            }
            Err(_) => return Outcome::Drop,
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

    async fn forward(&self, req: &Message, buf: &[u8]) -> Option<Vec<u8>> {
        match self.forwarder.forward(buf).await {
            Some(answer) => Some(answer),
            None => encode(&response_to(req, ResponseCode::ServFail)),
        }
    }

    /// The whole answer to one message (None: no answer is due).
    pub async fn handle(&self, buf: &[u8]) -> Option<Vec<u8>> {
        match self.local(buf) {
            Outcome::Reply(bytes) => Some(bytes),
            Outcome::Drop => None,
            Outcome::Forward(req) => self.forward(&req, buf).await,
        }
    }
}

/// Fits an answer to the UDP payload size the query allows, setting TC
/// (so the client retries over TCP) when it does not fit.
fn fit_udp(query: &[u8], answer: Vec<u8>) -> Vec<u8> {
    if answer.len() <= 512 {
        return answer;
    }
    let max = Message::from_vec(query)
        .map(|m| usize::from(m.max_payload()))
        .unwrap_or(512);
    if answer.len() <= max {
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
        };
        for addr in addrs {
            let (udp, tcp) = bind_pair(*addr).await?;
            server.udp.push(Arc::new(udp));
            server.tcp.push(tcp);
        }
        Ok(server)
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
        let mut tasks = JoinSet::new();
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        for socket in &self.udp {
            for _ in 0..workers {
                tasks.spawn(serve_udp(socket.clone(), handler.clone()));
            }
        }
        for listener in self.tcp {
            tasks.spawn(serve_tcp(listener, handler.clone()));
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

async fn serve_udp(socket: Arc<UdpSocket>, handler: Handler) -> Result<(), Error> {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "udp receive");
                continue;
            }
        };
        let query = &buf[..n];
        match handler.local(query) {
            Outcome::Drop => {}
            Outcome::Reply(answer) => {
                let answer = fit_udp(query, answer);
                if let Err(e) = socket.send_to(&answer, peer).await {
                    tracing::debug!(%peer, error = %e, "udp send");
                }
            }
            Outcome::Forward(req) => {
                let query = query.to_vec();
                let socket = socket.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    if let Some(answer) = handler.forward(&req, &query).await {
                        let answer = fit_udp(&query, answer);
                        if let Err(e) = socket.send_to(&answer, peer).await {
                            tracing::debug!(%peer, error = %e, "udp send");
                        }
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, handler: Handler) -> Result<(), Error> {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_conn(stream, handler.clone()));
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

async fn serve_conn(mut stream: TcpStream, handler: Handler) {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => len,
            _ => return,
        };
        let mut buf = vec![0u8; usize::from(len)];
        if tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf))
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
        let mut out = Vec::with_capacity(answer.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&answer);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
