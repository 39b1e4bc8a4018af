//! The proxy benchmark (`skiff bench proxy`; kube-proxy's nftables mode is
//! the anchor): program N services × M endpoints, then change one endpoint.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::model::{
    Endpoint, Protocol, ServiceInfo, ServiceName, ServicePort, SliceInfo, SlicePort,
};
use crate::netfilter::Netfilter;
use crate::proxier::Proxier;
use crate::rules::Selection;
use crate::{Config, Error};

/// The figures of one [`bench`] run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub services: usize,
    pub endpoints_per_service: usize,
    pub selection: Selection,
    /// Time to generate and apply the whole ruleset (a full sync).
    pub program_all: Duration,
    pub full_script_bytes: usize,
    /// Time for one endpoint change of one service (an incremental sync).
    pub one_endpoint_change: Duration,
    pub change_script_bytes: usize,
    /// Time to remove one service (an incremental sync).
    pub remove_one_service: Duration,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "proxy: {} services x {} endpoints ({:?} endpoint selection)",
            self.services, self.endpoints_per_service, self.selection
        )?;
        writeln!(
            f,
            "  program all:         {:>10.3} s  ({} KiB nft script)",
            self.program_all.as_secs_f64(),
            self.full_script_bytes / 1024
        )?;
        writeln!(
            f,
            "  one endpoint change: {:>10.3} ms ({} B nft script)",
            self.one_endpoint_change.as_secs_f64() * 1e3,
            self.change_script_bytes
        )?;
        write!(
            f,
            "  remove one service:  {:>10.3} ms",
            self.remove_one_service.as_secs_f64() * 1e3
        )
    }
}

fn v4(base: [u8; 4], n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::from(base)).wrapping_add(n as u32),
    ))
}

fn bench_slice(endpoint_ips: impl Iterator<Item = IpAddr>) -> SliceInfo {
    SliceInfo {
        ports: vec![SlicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
        endpoints: endpoint_ips
            .map(|ip| Endpoint {
                ip,
                ready: true,
                serving: true,
                terminating: false,
            })
            .collect(),
    }
}

/// Programs `services` ClusterIP services (10.43.0.0/16 onwards, port 80)
/// with `endpoints` ready endpoints each (10.44.0.0 onwards, port 8080) into
/// table `table` through `nft` and times it; then changes one endpoint of one
/// service and removes one service, timing each; then deletes the table.
/// Run it against a throwaway network namespace (`RealNft::in_netns`).
pub async fn bench<N: Netfilter>(
    nft: N,
    table: &str,
    services: usize,
    endpoints: usize,
    selection: Selection,
) -> Result<BenchReport, Error> {
    let config = Config {
        node_name: "bench".into(),
        table: table.into(),
        selection,
        ..Config::default()
    };
    config.validate()?;
    let mut proxier = Proxier::new(config, nft);
    let name = |i: usize| ServiceName::new("bench", &format!("svc-{i}"));
    let ep_ip = |i: usize, j: usize| v4([10, 44, 0, 0], 1 + i * endpoints + j);
    for i in 0..services {
        let info = ServiceInfo {
            cluster_ips: vec![v4([10, 43, 0, 0], 1 + i)],
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
            }],
            ..Default::default()
        };
        proxier.set_service(name(i), Some(info));
        proxier.set_slice(
            ("bench".into(), format!("svc-{i}-x")),
            Some((name(i), bench_slice((0..endpoints).map(|j| ep_ip(i, j))))),
        );
    }
    let start = Instant::now();
    let full = proxier.sync().await?;
    let program_all = start.elapsed();

    // One endpoint of the middle service moves to a new address.
    let i = services / 2;
    let moved = v4([10, 45, 0, 0], 1);
    let ips = (0..endpoints).map(|j| if j == 0 { moved } else { ep_ip(i, j) });
    proxier.set_slice(
        ("bench".into(), format!("svc-{i}-x")),
        Some((name(i), bench_slice(ips))),
    );
    let start = Instant::now();
    let change = proxier.sync().await?;
    let one_endpoint_change = start.elapsed();

    proxier.set_service(name(0), None);
    let start = Instant::now();
    proxier.sync().await?;
    let remove_one_service = start.elapsed();

    crate::cleanup(proxier.netfilter(), table).await?;
    Ok(BenchReport {
        services,
        endpoints_per_service: endpoints,
        selection,
        program_all,
        full_script_bytes: full.script_bytes,
        one_endpoint_change,
        change_script_bytes: change.script_bytes,
        remove_one_service,
    })
}
