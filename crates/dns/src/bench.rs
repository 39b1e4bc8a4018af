//! A load benchmark: N concurrent clients over loopback UDP against an
//! in-memory record set (for `skiff bench proxy`). Each client sends one
//! query at a time (A for a random service, every tenth an SRV) and
//! times the answer.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::net::UdpSocket;

use crate::{Error, Forwarder, Handler, Records, Server};

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Services in the record set.
    pub services: usize,
    /// Concurrent clients, one UDP socket and one query in flight each.
    pub clients: usize,
    /// How long to send for.
    pub duration: Duration,
}

impl Default for BenchConfig {
    fn default() -> BenchConfig {
        BenchConfig {
            services: 5000,
            clients: 16,
            duration: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub services: usize,
    pub clients: usize,
    /// Queries answered with records.
    pub answered: u64,
    /// Queries that timed out (1 s) or came back wrong.
    pub errors: u64,
    pub elapsed: Duration,
    pub queries_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dns: {} services, {} clients: {:.0} queries/s, p50 {:?}, p99 {:?} ({} answered, {} errors in {:.1?})",
            self.services,
            self.clients,
            self.queries_per_second,
            self.p50,
            self.p99,
            self.answered,
            self.errors,
            self.elapsed
        )
    }
}

/// A record set of `n` ClusterIP services `svc-<i>.ns-<i % 50>` with a
/// named port `http`.
pub fn synthetic_records(n: usize) -> Result<Records, Error> {
    let records = Records::new("cluster.local", 5)?;
    for i in 0..n {
        let ip = format!("10.43.{}.{}", (i / 250) % 256, i % 250 + 1);
        records.apply_service(&Service {
            metadata: ObjectMeta {
                name: Some(format!("svc-{i}")),
                namespace: Some(format!("ns-{}", i % 50)),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.clone()),
                cluster_ips: Some(vec![ip]),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        });
    }
    Ok(records)
}

fn query_bytes(i: usize, services: usize) -> Result<Vec<u8>, Error> {
    let s = i % services.max(1);
    let (name, qtype) = if i % 10 == 9 {
        (
            format!("_http._tcp.svc-{s}.ns-{}.svc.cluster.local.", s % 50),
            RecordType::SRV,
        )
    } else {
        (
            format!("svc-{s}.ns-{}.svc.cluster.local.", s % 50),
            RecordType::A,
        )
    };
    let name = Name::from_ascii(&name).map_err(|e| Error::Io(std::io::Error::other(e)))?;
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name, qtype));
    msg.to_vec()
        .map_err(|e| Error::Io(std::io::Error::other(e)))
}

/// Runs the benchmark: a server on 127.0.0.1:0 over `synthetic_records`,
/// and `clients` senders for `duration`.
pub async fn run(config: BenchConfig) -> Result<BenchReport, Error> {
    let records = synthetic_records(config.services)?;
    let server = Server::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let addr = server
        .local_addr()
        .ok_or_else(|| Error::Io(std::io::Error::other("no address")))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(
        Handler::new(records, Forwarder::new(vec![], Duration::from_secs(1))),
        async {
            let _ = stopped.await;
        },
    ));
    let start = Instant::now();
    let deadline = start + config.duration;
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..config.clients {
        let services = config.services;
        clients.spawn(async move {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            socket.connect(addr).await?;
            let mut latencies: Vec<Duration> = Vec::new();
            let mut errors = 0u64;
            let mut buf = vec![0u8; 4096];
            let mut i = c * 7919;
            while Instant::now() < deadline {
                i = i.wrapping_add(104_729);
                let query = query_bytes(i, services)?;
                let sent = Instant::now();
                socket.send(&query).await?;
                match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
                    Ok(Ok(n))
                        if n >= 12
                            && buf[..2] == query[..2]
                            && buf[3] & 0x0f == 0
                            && buf[6..8] != [0, 0] =>
                    {
                        latencies.push(sent.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            Ok::<_, Error>((latencies, errors))
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(res) = clients.join_next().await {
        let (l, e) = res.map_err(|e| Error::Io(std::io::Error::other(e)))??;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    let _ = stop.send(());
    let _ = serving.await;
    latencies.sort();
    let pct = |p: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[idx]
    };
    Ok(BenchReport {
        services: config.services,
        clients: config.clients,
        answered: latencies.len() as u64,
        errors,
        elapsed,
        queries_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A short run: every query is answered with records.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_run_answers_every_query() {
        let report = run(BenchConfig {
            services: 200,
            clients: 4,
            duration: Duration::from_millis(300),
        })
        .await
        .unwrap();
        println!("{report}");
        assert!(report.answered > 10, "{report}");
        assert_eq!(report.errors, 0, "{report}");
        assert!(report.p99 >= report.p50);
    }

    /// The figures: `cargo test -p skiff-dns --lib bench_5000_services -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark; prints figures"]
    async fn bench_5000_services() {
        for clients in [1, 16, 64] {
            let report = run(BenchConfig {
                services: 5000,
                clients,
                duration: Duration::from_secs(3),
            })
            .await
            .unwrap();
            println!("{report}");
            assert_eq!(report.errors, 0, "{report}");
        }
    }
}
