//! The DNS server over real sockets: cluster names from a real (in-process)
//! API server, forwarding to a fake upstream, UDP and TCP.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use skiff_dns::{Config, Forwarder, Handler, Records, Server};
use skiff_testsupport::{TestServer, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

fn query(name: &str, qtype: RecordType) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg
}

async fn udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let q = query(name, qtype);
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let mut buf = vec![0u8; 65535];
    // Resend on a timeout, as resolvers do: a query sent before the server
    // bound its socket is lost (the first queries race the server's start).
    let mut attempts = 0;
    let n = loop {
        socket.send_to(&q.to_vec().unwrap(), server).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await {
            Ok(received) => break received.unwrap().0,
            Err(_) if attempts < 5 => attempts += 1,
            Err(e) => panic!("no answer from {server} to {name} {qtype}: {e}"),
        }
    };
    let resp = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(resp.id, q.id);
    resp
}

async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let q = query(name, qtype);
    let bytes = q.to_vec().unwrap();
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await.unwrap();
    let resp = Message::from_vec(&buf).unwrap();
    assert_eq!(resp.id, q.id);
    resp
}

fn rdata(msg: &Message) -> Vec<String> {
    let mut v: Vec<String> = msg
        .answers
        .iter()
        .map(|r| format!("{} {}", r.record_type(), r.data))
        .collect();
    v.sort();
    v
}

/// A fake upstream resolver on 127.0.0.1: answers `example.com.` A over
/// UDP, `big.example.` with TC set over UDP and in full over TCP (same
/// port), and never answers `slow.example.`.
async fn fake_upstream() -> SocketAddr {
    // A UDP port whose TCP twin is free too: the ephemeral port the kernel
    // picks for UDP may be taken for TCP by another test's connection.
    let mut attempts = 0;
    let (udp, addr, tcp) = loop {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = udp.local_addr().unwrap();
        match TcpListener::bind(addr).await {
            Ok(tcp) => break (udp, addr, tcp),
            Err(e) if attempts < 20 => {
                attempts += 1;
                eprintln!("fake upstream: TCP {addr} taken ({e}); another port");
            }
            Err(e) => panic!("no UDP/TCP port pair for the fake upstream: {e}"),
        }
    };
    fn answer(q: &Message, truncated: bool) -> Option<Message> {
        let name = q.queries[0].name.clone();
        let mut resp = Message::response(q.id, OpCode::Query);
        resp.add_queries(q.queries.iter().cloned());
        resp.metadata.recursion_available = true;
        match name.to_ascii().as_str() {
            "example.com." => {
                resp.add_answer(Record::from_rdata(
                    name,
                    60,
                    RData::A(A::new(93, 184, 216, 34)),
                ));
            }
            "big.example." if truncated => resp.metadata.truncation = true,
            "big.example." => {
                for i in 0..100u8 {
                    resp.add_answer(Record::from_rdata(
                        name.clone(),
                        60,
                        RData::A(A::new(10, 9, 0, i)),
                    ));
                }
            }
            _ => return None,
        }
        Some(resp)
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            if let Some(resp) = answer(&q, true) {
                udp.send_to(&resp.to_vec().unwrap(), peer).await.unwrap();
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tcp.accept().await.unwrap();
            let len = stream.read_u16().await.unwrap();
            let mut buf = vec![0u8; len as usize];
            stream.read_exact(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf).unwrap();
            let bytes = answer(&q, false).unwrap().to_vec().unwrap();
            stream
                .write_all(&(bytes.len() as u16).to_be_bytes())
                .await
                .unwrap();
            stream.write_all(&bytes).await.unwrap();
        }
    });
    addr
}

/// Serves `records` on 127.0.0.1:0 forwarding to `upstreams`; stops when
/// the returned sender is dropped.
async fn serve(
    records: Records,
    upstreams: Vec<SocketAddr>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let server = Server::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handler = Handler::new(
        records,
        Forwarder::new(upstreams, Duration::from_millis(300)),
    );
    tokio::spawn(server.serve(handler, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

#[tokio::test]
async fn forwards_other_names_upstream() {
    let upstream = fake_upstream().await;
    // A dead upstream first: the forwarder moves on to the next one.
    let dead = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let (addr, _stop) = serve(
        Records::new("cluster.local", 5).unwrap(),
        vec![dead.local_addr().unwrap(), upstream],
    )
    .await;

    let resp = udp(addr, "example.com.", RecordType::A).await;
    assert_eq!(resp.response_code, ResponseCode::NoError);
    assert_eq!(rdata(&resp), vec!["A 93.184.216.34"]);
    assert!(!resp.authoritative);

    let resp = tcp(addr, "example.com.", RecordType::A).await;
    assert_eq!(rdata(&resp), vec!["A 93.184.216.34"]);

    // Truncated upstream answer: retried over TCP upstream; too big for a
    // plain 512-byte UDP answer, so the client gets TC and asks over TCP.
    let resp = udp(addr, "big.example.", RecordType::A).await;
    assert!(resp.truncation, "{resp}");
    let resp = tcp(addr, "big.example.", RecordType::A).await;
    assert!(!resp.truncation);
    assert_eq!(resp.answers.len(), 100);

    // No upstream answers in time: SERVFAIL.
    let resp = udp(addr, "slow.example.", RecordType::A).await;
    assert_eq!(resp.response_code, ResponseCode::ServFail);

    // Cluster names are not forwarded: an authoritative NXDOMAIN with the SOA.
    let resp = udp(addr, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(resp.response_code, ResponseCode::NXDomain);
    assert!(resp.authoritative);
    assert_eq!(resp.authorities.len(), 1);
    assert_eq!(resp.authorities[0].record_type(), RecordType::SOA);
}

#[tokio::test]
async fn no_upstreams_is_servfail() {
    let (addr, _stop) = serve(Records::new("cluster.local", 5).unwrap(), vec![]).await;
    let resp = udp(addr, "example.com.", RecordType::A).await;
    assert_eq!(resp.response_code, ResponseCode::ServFail);
    assert_eq!(resp.message_type, MessageType::Response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_services_from_the_api_server() {
    let api = TestServer::start().await;
    let client = api.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap(),
        )
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}
    }))
    .unwrap();
    let web = services.create(&PostParams::default(), &web).await.unwrap();
    let cluster_ip: IpAddr = web.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    let db: Service = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &db).await.unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "shop");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-1234", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.42.0.6"], "hostname": "db-1", "conditions": {"ready": false}}
        ]
    }))
    .unwrap();
    slices.create(&PostParams::default(), &slice).await.unwrap();

    // run() binds what it is told; find a free port for it first.
    let addr = {
        let probe = Server::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap();
        probe.local_addr().unwrap()
    };
    let config = Config {
        listen: vec![addr],
        upstreams: Some(vec![]),
        ..Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(skiff_dns::run(client.clone(), config, async {
        let _ = stopped.await;
    }));

    let resp = eventually("web's A record over UDP", || async {
        let resp = udp(addr, "web.shop.svc.cluster.local.", RecordType::A).await;
        (resp.response_code == ResponseCode::NoError && !resp.answers.is_empty()).then_some(resp)
    })
    .await;
    assert_eq!(rdata(&resp), vec![format!("A {cluster_ip}")]);
    assert!(resp.authoritative);
    assert_eq!(resp.answers[0].ttl, 5);

    let resp = eventually("db's ready endpoint over TCP", || async {
        let resp = tcp(addr, "db.shop.svc.cluster.local.", RecordType::A).await;
        (!resp.answers.is_empty()).then_some(resp)
    })
    .await;
    assert_eq!(rdata(&resp), vec!["A 10.42.0.5"]);

    let resp = tcp(
        addr,
        "_http._tcp.web.shop.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(
        rdata(&resp),
        vec!["SRV 0 100 80 web.shop.svc.cluster.local."]
    );
    assert_eq!(
        resp.additionals
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .count(),
        1
    );
    let resp = udp(addr, "_pg._tcp.db.shop.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(
        rdata(&resp),
        vec!["SRV 0 100 5432 db-0.db.shop.svc.cluster.local."]
    );
    let resp = udp(addr, "DB-0.db.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&resp), vec!["A 10.42.0.5"]);
    let resp = udp(addr, "db-1.db.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(resp.response_code, ResponseCode::NXDomain);

    let reverse = match cluster_ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(_) => panic!("expected an IPv4 ClusterIP"),
    };
    let resp = udp(addr, &reverse, RecordType::PTR).await;
    assert_eq!(rdata(&resp), vec!["PTR web.shop.svc.cluster.local."]);

    // NODATA: the name exists without AAAA records.
    let resp = udp(addr, "web.shop.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(resp.response_code, ResponseCode::NoError);
    assert!(resp.answers.is_empty());
    assert_eq!(resp.authorities[0].record_type(), RecordType::SOA);

    // The Service goes: NXDOMAIN follows the watch.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("web to be gone", || async {
        let resp = udp(addr, "web.shop.svc.cluster.local.", RecordType::A).await;
        (resp.response_code == ResponseCode::NXDomain).then_some(())
    })
    .await;

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// One UDP query from 127.0.0.1: the answer, or None after `wait`.
async fn udp_once(server: SocketAddr, name: &str, wait: Duration) -> Option<Message> {
    let q = query(name, RecordType::A);
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    socket.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(Message::from_vec(&buf[..n]).unwrap())
}

/// Review N1, through `run`: with `allowed_sources` set, a source is
/// answered only while it is in them or is a Node's address (watched):
/// 127.0.0.1 is neither until a Node with that InternalIP exists, and is
/// refused again (UDP unanswered, TCP closed at accept) once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_only_allowed_sources_and_node_addresses() {
    let api = TestServer::start().await;
    let client = api.client.clone();
    let addr = {
        let probe = Server::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap();
        probe.local_addr().unwrap()
    };
    let config = Config {
        listen: vec![addr],
        upstreams: Some(vec![]),
        allowed_sources: vec![(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8)],
        ..Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(skiff_dns::run(client.clone(), config, async {
        let _ = stopped.await;
    }));
    let name = "nope.default.svc.cluster.local.";

    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "local"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let resp = eventually("an answer once 127.0.0.1 is a Node's address", || async {
        udp_once(addr, name, Duration::from_millis(500)).await
    })
    .await;
    assert_eq!(resp.response_code, ResponseCode::NXDomain);
    let resp = tcp(addr, name, RecordType::A).await;
    assert_eq!(resp.response_code, ResponseCode::NXDomain);

    nodes
        .delete("local", &DeleteParams::default())
        .await
        .unwrap();
    eventually("no UDP answer once the Node is gone", || async {
        udp_once(addr, name, Duration::from_millis(500))
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
