//! The node IPAM controller (↔ pkg/controller/nodeipam, range allocator):
//! every node without a pod CIDR gets spec.podCIDR and spec.podCIDRs set to
//! the next free /node_cidr_mask block of cluster_cidr (10.42.0.0/16 with
//! /24 → 10.42.0.0/24, 10.42.1.0/24, ...). Blocks of existing nodes are
//! taken at start and whenever a node shows up with one; a deleted node's
//! block is released. When none is left the node gets a CIDRNotAvailable
//! event and is retried when a block frees up.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::loopkit::Store;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use skiff_runtime::events::{EventType, reference};

use crate::loopkit::{self, Error, Outcome, WorkQueue, is_status};

const CONTROLLER: &str = "nodeipam";
/// A node that found no free block looks again this often anyway.
const FULL_RETRY: Duration = Duration::from_secs(30);
/// The largest number of blocks a cluster CIDR may be cut into (as the
/// Kubernetes allocator's limit on mask - prefix).
const MAX_BLOCK_BITS: u8 = 24;

// ---------------------------------------------------------------------------
// The allocator (pure).

/// An IPv4 CIDR "a.b.c.d/n", normalized to its network address.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.trim().split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then(|| (Ipv4Addr::from(u32::from(ip) & netmask(len)), len))
}

fn netmask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// The free and used /mask blocks of a cluster CIDR (↔ cidrset.CidrSet).
#[derive(Clone, Debug)]
pub struct CidrSet {
    base: u32,
    prefix: u8,
    mask: u8,
    used: Vec<bool>,
    next: usize,
    allocated: usize,
}

impl CidrSet {
    pub fn new(cluster: (Ipv4Addr, u8), mask: u8) -> Result<CidrSet, Error> {
        let (ip, prefix) = cluster;
        if prefix > 32 || mask > 32 || mask < prefix {
            return Err(Error::Invalid(format!(
                "node CIDR mask /{mask} does not fit in cluster CIDR {ip}/{prefix}"
            )));
        }
        if mask - prefix > MAX_BLOCK_BITS {
            return Err(Error::Invalid(format!(
                "node CIDR mask /{mask} cuts {ip}/{prefix} into too many blocks (at most 2^{MAX_BLOCK_BITS})"
            )));
        }
        let count = 1usize << (mask - prefix);
        Ok(CidrSet {
            base: u32::from(ip) & netmask(prefix),
            prefix,
            mask,
            used: vec![false; count],
            next: 0,
            allocated: 0,
        })
    }

    pub fn capacity(&self) -> usize {
        self.used.len()
    }

    pub fn allocated(&self) -> usize {
        self.allocated
    }

    fn block(&self, index: usize) -> String {
        let size_bits = 32 - u32::from(self.mask);
        let offset = (index as u64) << size_bits;
        let addr = (u64::from(self.base) + offset) as u32;
        format!("{}/{}", Ipv4Addr::from(addr), self.mask)
    }

    /// The block indices a CIDR covers, or `None` if it is outside the cluster CIDR.
    fn range(&self, cidr: &str) -> Option<(usize, usize)> {
        let (ip, len) = parse_cidr(cidr)?;
        let ip = u32::from(ip);
        if len < self.prefix || ip & netmask(self.prefix) != self.base {
            return None;
        }
        let size_bits = 32 - u32::from(self.mask);
        let first = ((ip - self.base) >> size_bits) as usize;
        let last = if len >= self.mask {
            first
        } else {
            let span = 1usize << (self.mask - len);
            first + span - 1
        };
        (last < self.used.len()).then_some((first, last))
    }

    /// Take the next free block, searching from after the last one taken.
    pub fn allocate_next(&mut self) -> Option<String> {
        let n = self.used.len();
        for i in 0..n {
            let index = (self.next + i) % n;
            if !self.used[index] {
                self.used[index] = true;
                self.allocated += 1;
                self.next = (index + 1) % n;
                return Some(self.block(index));
            }
        }
        None
    }

    /// Mark a CIDR (any size) as used; false if it is not in the cluster CIDR.
    pub fn occupy(&mut self, cidr: &str) -> bool {
        let Some((first, last)) = self.range(cidr) else {
            return false;
        };
        for used in &mut self.used[first..=last] {
            if !*used {
                *used = true;
                self.allocated += 1;
            }
        }
        true
    }

    /// Free a CIDR (any size) inside the cluster CIDR.
    pub fn release(&mut self, cidr: &str) {
        let Some((first, last)) = self.range(cidr) else {
            return;
        };
        for used in &mut self.used[first..=last] {
            if *used {
                *used = false;
                self.allocated -= 1;
            }
        }
    }
}

/// The pod CIDRs a node has (spec.podCIDRs, else spec.podCIDR).
pub fn node_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    match spec.pod_cidrs.as_ref().filter(|c| !c.is_empty()) {
        Some(cidrs) => cidrs.clone(),
        None => spec
            .pod_cidr
            .iter()
            .filter(|c| !c.is_empty())
            .cloned()
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// The controller.

struct Allocator {
    set: CidrSet,
    /// What each node holds, as far as this controller knows.
    by_node: HashMap<String, Vec<String>>,
    /// Nodes that found no free block.
    waiting: BTreeSet<String>,
}

impl Allocator {
    fn record(&mut self, node: &str, cidrs: Vec<String>) {
        let old = self
            .by_node
            .insert(node.to_string(), cidrs.clone())
            .unwrap_or_default();
        for c in old.iter().filter(|c| !cidrs.contains(c)) {
            self.set.release(c);
        }
        for c in &cidrs {
            if !self.set.occupy(c) {
                tracing::debug!(node, cidr = c, "pod CIDR outside the cluster CIDR");
            }
        }
    }

    fn forget(&mut self, node: &str) -> bool {
        match self.by_node.remove(node) {
            Some(cidrs) => {
                cidrs.iter().for_each(|c| self.set.release(c));
                true
            }
            None => false,
        }
    }
}

pub async fn run(ctx: crate::Context) {
    let set = match CidrSet::new(ctx.config.cluster_cidr, ctx.config.node_cidr_mask) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "node IPAM disabled");
            return std::future::pending().await;
        }
    };
    let queue = Arc::new(WorkQueue::<String>::new());
    let q = queue.clone();
    let (nodes, node_informer) = ctx.informers.get::<Node>().informer(move |ev, _| {
        if let Some(node) = loopkit::event_object(ev) {
            q.add(node.metadata.name.clone().unwrap_or_default());
        }
    });
    let worker = async {
        if !loopkit::wait_ready(&nodes).await {
            return;
        }
        let mut alloc = Allocator {
            set,
            by_node: HashMap::new(),
            waiting: BTreeSet::new(),
        };
        for node in nodes.state() {
            let name = node.metadata.name.clone().unwrap_or_default();
            let cidrs = node_cidrs(&node);
            if !cidrs.is_empty() {
                alloc.record(&name, cidrs);
            }
            queue.add(name);
        }
        tracing::info!(
            allocated = alloc.set.allocated(),
            capacity = alloc.set.capacity(),
            "node IPAM ready"
        );
        loop {
            let name = queue.next().await;
            let outcome = crate::loopkit::guarded(
                CONTROLLER,
                &name,
                reconcile(&ctx, &nodes, &mut alloc, &queue, &name),
            )
            .await;
            queue.finish(CONTROLLER, name, outcome);
        }
    };
    tokio::join!(node_informer, worker);
}

async fn reconcile(
    ctx: &crate::Context,
    nodes: &Store<Node>,
    alloc: &mut Allocator,
    queue: &WorkQueue<String>,
    name: &str,
) -> Outcome {
    let Some(node) = nodes.get(&ObjectRef::new(name)) else {
        alloc.waiting.remove(name);
        if alloc.forget(name) {
            tracing::info!(node = name, "released the pod CIDR of a deleted node");
            // Someone may be waiting for a block.
            std::mem::take(&mut alloc.waiting)
                .into_iter()
                .for_each(|n| queue.add(n));
        }
        return Ok(None);
    };
    let cidrs = node_cidrs(&node);
    if !cidrs.is_empty() {
        alloc.waiting.remove(name);
        alloc.record(name, cidrs);
        return Ok(None);
    }
    // Assigned by us but not yet seen by the informer: write the same again.
    let cidr = match alloc.by_node.get(name).and_then(|c| c.first()).cloned() {
        Some(c) => c,
        None => match alloc.set.allocate_next() {
            Some(c) => {
                alloc.by_node.insert(name.to_string(), vec![c.clone()]);
                c
            }
            None => {
                alloc.waiting.insert(name.to_string());
                let message = format!("Node {name} status is now: CIDRNotAvailable");
                ctx.recorder
                    .record(
                        &reference(node.as_ref()),
                        EventType::Normal,
                        "CIDRNotAvailable",
                        &message,
                    )
                    .await;
                tracing::warn!(
                    node = name,
                    capacity = alloc.set.capacity(),
                    "no pod CIDR left for the node"
                );
                return Ok(Some(FULL_RETRY));
            }
        },
    };
    alloc.waiting.remove(name);
    let api: Api<Node> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(node = name, cidr, "assigned pod CIDR");
            Ok(None)
        }
        Err(e) if is_status(&e, 404) => {
            alloc.forget(name);
            Ok(None)
        }
        Err(e) => {
            alloc.forget(name);
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cidr: &str, mask: u8) -> CidrSet {
        let c = parse_cidr(cidr).expect("a CIDR");
        CidrSet::new(c, mask).expect("a valid set")
    }

    #[test]
    fn parse_cidrs() {
        let cases = [
            ("10.42.0.0/16", Some(("10.42.0.0", 16))),
            ("10.42.3.7/16", Some(("10.42.0.0", 16))),
            ("0.0.0.0/0", Some(("0.0.0.0", 0))),
            ("10.42.0.0/33", None),
            ("10.42.0.0", None),
            ("fd00::/64", None),
        ];
        for (s, want) in cases {
            let got = parse_cidr(s).map(|(ip, l)| (ip.to_string(), l));
            assert_eq!(got, want.map(|(ip, l)| (ip.to_string(), l)), "{s}");
        }
    }

    #[test]
    fn rejects_bad_masks() {
        let c = parse_cidr("10.42.0.0/16").expect("cidr");
        assert!(CidrSet::new(c, 15).is_err());
        assert!(CidrSet::new(c, 33).is_err());
        assert!(CidrSet::new(parse_cidr("10.0.0.0/8").expect("cidr"), 32).is_ok());
        assert!(CidrSet::new(parse_cidr("0.0.0.0/0").expect("cidr"), 32).is_err());
    }

    #[test]
    fn allocates_in_order_and_wraps_after_release() {
        let mut s = set("10.42.0.0/16", 24);
        assert_eq!(s.capacity(), 256);
        assert_eq!(s.allocate_next().as_deref(), Some("10.42.0.0/24"));
        assert_eq!(s.allocate_next().as_deref(), Some("10.42.1.0/24"));
        assert!(s.occupy("10.42.2.0/24"));
        assert_eq!(s.allocate_next().as_deref(), Some("10.42.3.0/24"));
        s.release("10.42.1.0/24");
        assert_eq!(s.allocated(), 3);
        // The search goes on from the last allocation, then wraps around.
        assert_eq!(s.allocate_next().as_deref(), Some("10.42.4.0/24"));
        let mut small = set("10.99.0.0/23", 24);
        assert_eq!(small.allocate_next().as_deref(), Some("10.99.0.0/24"));
        assert_eq!(small.allocate_next().as_deref(), Some("10.99.1.0/24"));
        assert_eq!(small.allocate_next(), None);
        small.release("10.99.0.0/24");
        assert_eq!(small.allocate_next().as_deref(), Some("10.99.0.0/24"));
    }

    #[test]
    fn occupy_handles_other_sizes_and_outsiders() {
        let mut s = set("10.42.0.0/16", 24);
        assert!(!s.occupy("10.43.0.0/24"));
        assert!(!s.occupy("10.0.0.0/8"));
        assert!(s.occupy("10.42.0.0/23")); // two blocks
        assert_eq!(s.allocated(), 2);
        assert!(s.occupy("10.42.2.128/25")); // part of a block takes the block
        assert_eq!(s.allocated(), 3);
        assert_eq!(s.allocate_next().as_deref(), Some("10.42.3.0/24"));
        s.release("10.42.0.0/23");
        assert_eq!(s.allocated(), 2);
        s.release("192.168.0.0/24");
        assert_eq!(s.allocated(), 2);
    }

    #[test]
    fn node_cidrs_prefers_the_list() {
        let mut n = Node::default();
        assert!(node_cidrs(&n).is_empty());
        let spec = n.spec.get_or_insert_with(Default::default);
        spec.pod_cidr = Some("10.42.1.0/24".into());
        assert_eq!(node_cidrs(&n), ["10.42.1.0/24"]);
        n.spec.get_or_insert_with(Default::default).pod_cidrs = Some(vec!["10.42.2.0/24".into()]);
        assert_eq!(node_cidrs(&n), ["10.42.2.0/24"]);
    }
}
