//! Who may ask: the source ACL that keeps the cluster DNS from being an
//! open resolver (security review N1). The server listens on the node's
//! address, where anyone who can route to the node could reach it, so it
//! answers only sources in the configured networks (the pod and service
//! CIDRs, this node's address, loopback) plus a set of single addresses
//! kept up to date at run time (every Node's addresses: pods on another
//! node reach this server masqueraded to their node's address). Anything
//! else is ignored: a UDP query gets no answer at all (nothing to reflect
//! or amplify), a TCP connection is closed as soon as it is accepted.
//!
//! An ACL without networks allows every source (what tests and the
//! benchmark use).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::Error;

/// An address block: `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// `addr/prefix`; the prefix must fit the family (at most 32 for IPv4,
    /// 128 for IPv6). Host bits in `addr` are ignored.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Network, Error> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(Error::Network { addr, prefix });
        }
        Ok(Network { addr, prefix })
    }

    /// Whether `ip` is in the block. An IPv4 source written as an
    /// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack
    /// socket reports) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32_u32.saturating_sub(u32::from(self.prefix)))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128_u32.saturating_sub(u32::from(self.prefix)))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The sources the server answers. Clones share the run-time address set.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    networks: Vec<Network>,
    /// Single addresses allowed besides `networks` (every Node's), replaced
    /// whole by [`Acl::set_addresses`].
    addresses: RwLock<HashSet<IpAddr>>,
}

impl Acl {
    /// An ACL that allows every source.
    pub fn allow_all() -> Acl {
        Acl::default()
    }

    /// An ACL allowing `networks` (address, prefix length); none: every
    /// source.
    pub fn new(networks: &[(IpAddr, u8)]) -> Result<Acl, Error> {
        let networks = networks
            .iter()
            .map(|&(addr, prefix)| Network::new(addr, prefix))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Acl {
            inner: Arc::new(Inner {
                networks,
                addresses: RwLock::default(),
            }),
        })
    }

    /// Whether every source is allowed (no networks configured).
    pub fn is_open(&self) -> bool {
        self.inner.networks.is_empty()
    }

    /// The configured networks.
    pub fn networks(&self) -> &[Network] {
        &self.inner.networks
    }

    /// Replaces the single addresses allowed besides the networks. They
    /// matter only when networks are configured: an open ACL stays open.
    pub fn set_addresses(&self, addresses: HashSet<IpAddr>) {
        let addresses = addresses.into_iter().map(|a| a.to_canonical()).collect();
        let mut current = self
            .inner
            .addresses
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = addresses;
    }

    /// Whether a query from `source` is answered.
    pub fn allows(&self, source: IpAddr) -> bool {
        if self.is_open() {
            return true;
        }
        let source = source.to_canonical();
        if self.inner.networks.iter().any(|n| n.contains(source)) {
            return true;
        }
        self.inner
            .addresses
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(&source)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// What node.rs configures: pod CIDR, service CIDR, node address, loopback.
    fn node_acl() -> Acl {
        Acl::new(&[
            (ip("10.42.0.0"), 16),
            (ip("10.43.0.0"), 16),
            (ip("192.168.1.10"), 32),
            (ip("127.0.0.0"), 8),
            (ip("::1"), 128),
        ])
        .unwrap()
    }

    #[test]
    fn answers_the_cluster_and_nobody_else() {
        let acl = node_acl();
        assert!(!acl.is_open());
        for allowed in [
            "10.42.0.5",
            "10.42.255.255",
            "10.43.0.10",
            "192.168.1.10",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            // A dual-stack socket's view of an IPv4 pod.
            "::ffff:10.42.3.4",
        ] {
            assert!(acl.allows(ip(allowed)), "{allowed} should be allowed");
        }
        for denied in [
            "10.41.255.255",
            "10.44.0.1",
            "192.168.1.11",
            "8.8.8.8",
            "0.0.0.0",
            "::2",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!acl.allows(ip(denied)), "{denied} should be denied");
        }
    }

    #[test]
    fn no_networks_allows_everyone() {
        for acl in [Acl::allow_all(), Acl::new(&[]).unwrap()] {
            assert!(acl.is_open());
            assert!(acl.allows(ip("8.8.8.8")));
            assert!(acl.allows(ip("2001:db8::1")));
            // Run-time addresses do not close an open ACL.
            acl.set_addresses(HashSet::from([ip("10.0.0.1")]));
            assert!(acl.allows(ip("8.8.8.8")));
        }
    }

    #[test]
    fn run_time_addresses_are_replaced_whole_and_shared_by_clones() {
        let acl = node_acl();
        let clone = acl.clone();
        assert!(!acl.allows(ip("192.168.1.20")));
        clone.set_addresses(HashSet::from([
            ip("192.168.1.20"),
            ip("::ffff:192.168.1.21"),
        ]));
        assert!(acl.allows(ip("192.168.1.20")));
        assert!(acl.allows(ip("192.168.1.21")));
        assert!(!acl.allows(ip("192.168.1.22")));
        clone.set_addresses(HashSet::from([ip("192.168.1.22")]));
        assert!(!acl.allows(ip("192.168.1.20")));
        assert!(acl.allows(ip("192.168.1.22")));
        // The networks stay.
        assert!(acl.allows(ip("10.42.0.5")));
    }

    #[test]
    fn prefixes_at_the_edges() {
        let any4 = Network::new(ip("1.2.3.4"), 0).unwrap();
        assert!(any4.contains(ip("255.255.255.255")));
        assert!(!any4.contains(ip("::1")));
        let any6 = Network::new(ip("::"), 0).unwrap();
        assert!(any6.contains(ip("2001:db8::1")));
        let host = Network::new(ip("10.0.0.1"), 32).unwrap();
        assert!(host.contains(ip("10.0.0.1")));
        assert!(!host.contains(ip("10.0.0.0")));
        let v6 = Network::new(ip("fd00:10:42::"), 56).unwrap();
        assert!(v6.contains(ip("fd00:10:42:ff::1")));
        assert!(!v6.contains(ip("fd00:10:42:100::1")));
        // Host bits in the network address are ignored.
        assert!(
            Network::new(ip("10.42.7.7"), 16)
                .unwrap()
                .contains(ip("10.42.0.1"))
        );
        assert_eq!(host.to_string(), "10.0.0.1/32");
    }

    #[test]
    fn a_prefix_longer_than_the_family_is_an_error() {
        assert!(matches!(
            Acl::new(&[(ip("10.0.0.0"), 33)]),
            Err(Error::Network { prefix: 33, .. })
        ));
        assert!(Network::new(ip("::"), 129).is_err());
        assert!(Network::new(ip("::"), 128).is_ok());
    }
}
