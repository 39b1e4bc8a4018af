//! The iptables mode (↔ kube-proxy's pkg/proxy/iptables): the fallback for
//! hosts without `nft`, or chosen with [`crate::Mode::Iptables`].
//!
//! It consumes the same [`Update`]s and model as the nftables [`Proxier`](crate::Proxier)
//! (the same endpoint choice: ready endpoints, or serving and terminating
//! ones when none is ready) and programs kube-proxy's iptables layout, in
//! the `nat` and `filter` tables of `iptables` (and `ip6tables` when the
//! configuration has IPv6 families). Chain names are global in iptables, so
//! every chain carries a prefix derived from [`Config::table`] (see
//! [`chain_prefix`]: `SKIFF` for the default table) and is at most 28
//! characters long (`P` is the prefix):
//!
//! - nat `P-SERVICES`, jumped to from PREROUTING and OUTPUT: per service
//!   port one rule per ClusterIP → `P-SVC-…`, per externalIP and
//!   LoadBalancer ingress IP → `P-EXT-…`, and last
//!   `-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8` → `P-NODEPORTS`
//!   (NodePort → `P-EXT-…`; loopback is excluded, as in the nftables mode,
//!   so `route_localnet` is never needed);
//! - `P-SVC-…` per service port: the masquerade mark for traffic to the
//!   ClusterIP from outside the cluster CIDR, `-m recent --rcheck` rules for
//!   sessionAffinity ClientIP, then one rule per endpoint with
//!   `-m statistic --mode random --probability 1/n, 1/(n-1), …`, the last
//!   unconditional, jumping to the endpoint's `P-SEP-…` chain (hairpin
//!   mark, `-m recent --set` under affinity, DNAT);
//! - `P-EXT-…`: the masquerade mark for all NodePort and external traffic,
//!   then the service chain; `P-MARK-MASQ` sets mark 0x4000; nat
//!   `P-POSTROUTING` (from POSTROUTING) masquerades what carries it;
//! - filter `P-SERVICES` (FORWARD, OUTPUT) and `P-EXTERNAL-SERVICES`
//!   (INPUT, FORWARD) REJECT new connections to service ports without
//!   endpoints (ClusterIPs; externalIPs, LoadBalancer IPs and NodePorts).
//!
//! Syncing is kube-proxy's too, and so is its cost: every sync (batched by
//! `min_sync_period` in the same [`run_loop`](crate::proxier::run_loop)) writes
//! the whole ruleset of our chains with one `iptables-restore --noflush` per
//! family; declaring a chain flushes it, and chains of services that went
//! away are declared and deleted (`-X`) in the same commit. That is
//! O(services) per change, which is why this mode is only the fallback: the
//! nftables mode updates only what changed. The jump rules in the built-in
//! chains are inserted once (and re-checked at each full resync);
//! [`cleanup`] removes them and every chain with our prefix. Not done here
//! (nor in kube-proxy's iptables mode): the nftables mode's drop of
//! unallocated service-CIDR addresses.
//!
//! Every kernel change goes through the [`Iptables`] trait ([`RealIptables`]
//! runs the tools, [`IptablesRecorder`] is the test double); rule generation
//! does no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::process::Command;

use crate::model::{Cidr, Family, ServiceInfo, ServiceName, SliceInfo, endpoints_for};
use crate::netfilter::{Host, find_program, run_with_input};
use crate::proxier::{Desired, SyncStats, Syncer, Update};
use crate::rules::{MASQ_MARK, dnat_target, fnv1a, port_id};
use crate::{Config, DEFAULT_TABLE, Error};

pub const NAT: &str = "nat";
pub const FILTER: &str = "filter";
/// The chain prefix of the default table ([`DEFAULT_TABLE`]).
pub const DEFAULT_PREFIX: &str = "SKIFF";
/// iptables' limit on chain names.
pub const MAX_CHAIN_LEN: usize = 28;

/// Targets that are not chains (what a rule may jump to besides our chains).
const TARGETS: [&str; 7] = [
    "MARK",
    "DNAT",
    "REJECT",
    "RETURN",
    "MASQUERADE",
    "ACCEPT",
    "DROP",
];

fn base32(h: u64, n: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..n.min(12))
        .map(|i| ALPHABET[((h >> (59 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// The chain prefix of the proxy whose table is `table`: [`DEFAULT_PREFIX`]
/// for the default table, else `SK` and 4 characters of a hash of the name
/// (so proxies side by side, as in tests, never share a chain).
pub fn chain_prefix(table: &str) -> String {
    if table == DEFAULT_TABLE {
        DEFAULT_PREFIX.into()
    } else {
        format!("SK{}", base32(fnv1a(table), 4))
    }
}

/// The names of one proxy's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub prefix: String,
    /// nat (service portals) and filter (services without endpoints).
    pub services: String,
    pub nodeports: String,
    pub postrouting: String,
    pub mark_masq: String,
    /// filter: externally reachable ports without endpoints.
    pub external_services: String,
}

impl Names {
    pub fn new(table: &str) -> Names {
        let prefix = chain_prefix(table);
        let name = |s: &str| format!("{prefix}-{s}");
        Names {
            services: name("SERVICES"),
            nodeports: name("NODEPORTS"),
            postrouting: name("POSTROUTING"),
            mark_masq: name("MARK-MASQ"),
            external_services: name("EXTERNAL-SERVICES"),
            prefix,
        }
    }

    /// A per-service chain: `P-SVC-…`, `P-EXT-…` or `P-SEP-…` with 12
    /// base32 characters of a hash of `id` (↔ kube-proxy's `KUBE-SVC-<hash>`).
    pub fn chain(&self, kind: &str, id: &str) -> String {
        format!("{}-{kind}-{}", self.prefix, base32(fnv1a(id), 12))
    }

    /// Whether `chain` is one of ours.
    pub fn ours(&self, chain: &str) -> bool {
        chain
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with('-'))
    }

    /// The rules in built-in chains leading to ours: (table, chain, rule arguments).
    pub fn jump_rules(&self) -> Vec<(&'static str, &'static str, Vec<String>)> {
        let rule = |comment: &str, target: &str, new_only: bool| {
            let mut r: Vec<String> = Vec::new();
            if new_only {
                r.extend(["-m", "conntrack", "--ctstate", "NEW"].map(String::from));
            }
            r.extend(["-m", "comment", "--comment", comment, "-j", target].map(String::from));
            r
        };
        let portals = "skiff service portals";
        let external = "skiff externally-visible service portals";
        vec![
            (NAT, "PREROUTING", rule(portals, &self.services, false)),
            (NAT, "OUTPUT", rule(portals, &self.services, false)),
            (
                NAT,
                "POSTROUTING",
                rule("skiff postrouting rules", &self.postrouting, false),
            ),
            (
                FILTER,
                "INPUT",
                rule(external, &self.external_services, true),
            ),
            (FILTER, "FORWARD", rule(portals, &self.services, true)),
            (
                FILTER,
                "FORWARD",
                rule(external, &self.external_services, true),
            ),
            (FILTER, "OUTPUT", rule(portals, &self.services, true)),
        ]
    }
}

/// What one service port contributes, in one family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRules {
    /// Its own nat chains (`P-SVC-…`, `P-EXT-…`, `P-SEP-…`) and their rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Rules of the nat services chain.
    pub services: Vec<String>,
    /// Rules of the nat nodeports chain.
    pub nodeports: Vec<String>,
    /// Rules of the filter services chain (ClusterIPs without endpoints).
    pub reject: Vec<String>,
    /// Rules of the filter external services chain.
    pub reject_external: Vec<String>,
}

/// What rendering needs besides the service.
#[derive(Debug, Clone)]
pub struct RenderCtx<'a> {
    pub family: Family,
    pub names: &'a Names,
    /// The pod CIDRs of this family: traffic from elsewhere to a ClusterIP is masqueraded.
    pub cluster_cidrs: Vec<Cidr>,
}

/// `-d ip -p proto -m proto --dport port -m comment --comment "text"`.
fn port_match(ip: Option<&IpAddr>, proto: &str, port: u16, comment: &str) -> String {
    let dest = ip.map(|ip| format!("-d {ip} ")).unwrap_or_default();
    format!("{dest}-p {proto} -m {proto} --dport {port} -m comment --comment \"{comment}\"")
}

/// The rules of one Service in one family, given its EndpointSlices.
pub fn render_service(
    ctx: &RenderCtx,
    name: &ServiceName,
    svc: &ServiceInfo,
    slices: &[&SliceInfo],
) -> ServiceRules {
    let mut out = ServiceRules::default();
    let fam = ctx.family;
    let names = ctx.names;
    let (cluster_ips, external_ips) = svc.addresses(fam);
    if cluster_ips.is_empty() {
        return out;
    }
    let lo = fam.loopback();
    for port in &svc.ports {
        let id = port_id(name, port);
        let proto = port.protocol.nft();
        let pname = if port.name.is_empty() {
            port.port.to_string()
        } else {
            port.name.clone()
        };
        let comment = format!("{}/{}:{pname}", name.namespace, name.name);
        let endpoints = endpoints_for(port, fam, slices.iter().copied());
        if endpoints.is_empty() {
            let text = format!("{comment} has no endpoints");
            for ip in &cluster_ips {
                out.reject.push(format!(
                    "{} -j REJECT",
                    port_match(Some(ip), proto, port.port, &text)
                ));
            }
            for ip in &external_ips {
                out.reject_external.push(format!(
                    "{} -j REJECT",
                    port_match(Some(ip), proto, port.port, &text)
                ));
            }
            if let Some(np) = port.node_port {
                out.reject_external.push(format!(
                    "-m addrtype --dst-type LOCAL ! -d {lo} {} -j REJECT",
                    port_match(None, proto, np, &text)
                ));
            }
            continue;
        }

        let svc_chain = names.chain("SVC", &id);
        let mut svc_rules = Vec::new();
        for cidr in &ctx.cluster_cidrs {
            for cip in &cluster_ips {
                svc_rules.push(format!(
                    "! -s {cidr} {} -j {}",
                    port_match(
                        Some(cip),
                        proto,
                        port.port,
                        &format!("{comment} cluster IP")
                    ),
                    names.mark_masq
                ));
            }
        }
        let mut choice = Vec::new();
        let n = endpoints.len();
        for (i, ep) in endpoints.iter().enumerate() {
            let sep = names.chain("SEP", &format!("{id}__{}/{}", ep.ip(), ep.port()));
            let to = format!("-m comment --comment \"{comment} -> {}\"", dnat_target(ep));
            let mut sep_rules = vec![format!(
                "-s {} -m comment --comment \"{comment}\" -j {}",
                ep.ip(),
                names.mark_masq
            )];
            let mut recent_set = String::new();
            if let Some(timeout) = svc.affinity_timeout {
                svc_rules.push(format!(
                    "{to} -m recent --name {sep} --rsource --rcheck --seconds {timeout} --reap -j {sep}"
                ));
                recent_set = format!(" -m recent --name {sep} --rsource --set");
            }
            sep_rules.push(format!(
                "-p {proto} -m comment --comment \"{comment}\"{recent_set} -j DNAT --to-destination {}",
                dnat_target(ep)
            ));
            out.chains.insert(sep.clone(), sep_rules);
            choice.push(if i + 1 < n {
                format!(
                    "{to} -m statistic --mode random --probability {:.10} -j {sep}",
                    1.0 / (n - i) as f64
                )
            } else {
                format!("{to} -j {sep}")
            });
        }
        svc_rules.extend(choice);
        out.chains.insert(svc_chain.clone(), svc_rules);
        for cip in &cluster_ips {
            out.services.push(format!(
                "{} -j {svc_chain}",
                port_match(
                    Some(cip),
                    proto,
                    port.port,
                    &format!("{comment} cluster IP")
                )
            ));
        }
        if !external_ips.is_empty() || port.node_port.is_some() {
            let ext_chain = names.chain("EXT", &id);
            out.chains.insert(
                ext_chain.clone(),
                vec![
                    format!(
                        "-m comment --comment \"masquerade traffic for {comment} external destinations\" -j {}",
                        names.mark_masq
                    ),
                    format!("-j {svc_chain}"),
                ],
            );
            for ip in &external_ips {
                out.services.push(format!(
                    "{} -j {ext_chain}",
                    port_match(
                        Some(ip),
                        proto,
                        port.port,
                        &format!("{comment} external IP")
                    )
                ));
            }
            if let Some(np) = port.node_port {
                out.nodeports.push(format!(
                    "{} -j {ext_chain}",
                    port_match(None, proto, np, &comment)
                ));
            }
        }
    }
    out
}

/// Table → chain → rules: a whole ruleset of one family.
pub type Tables = BTreeMap<&'static str, BTreeMap<String, Vec<String>>>;

/// The whole ruleset of one family: the fixed chains and every service's.
pub fn ruleset<'a>(
    names: &Names,
    family: Family,
    services: impl IntoIterator<Item = &'a ServiceRules>,
) -> Tables {
    let mut nat: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (mut portals, mut nodeports, mut reject, mut reject_external) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in services {
        nat.extend(r.chains.iter().map(|(k, v)| (k.clone(), v.clone())));
        portals.extend(r.services.iter().cloned());
        nodeports.extend(r.nodeports.iter().cloned());
        reject.extend(r.reject.iter().cloned());
        reject_external.extend(r.reject_external.iter().cloned());
    }
    portals.push(format!(
        "-m comment --comment \"skiff service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d {} -j {}",
        family.loopback(),
        names.nodeports
    ));
    nat.insert(names.services.clone(), portals);
    nat.insert(names.nodeports.clone(), nodeports);
    nat.insert(
        names.mark_masq.clone(),
        vec![format!("-j MARK --or-mark {MASQ_MARK}")],
    );
    nat.insert(
        names.postrouting.clone(),
        vec![
            format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
            format!("-j MARK --xor-mark {MASQ_MARK}"),
            "-m comment --comment \"skiff service traffic requiring SNAT\" -j MASQUERADE --random-fully".into(),
        ],
    );
    let mut filter = BTreeMap::new();
    filter.insert(names.services.clone(), reject);
    filter.insert(names.external_services.clone(), reject_external);
    BTreeMap::from([(NAT, nat), (FILTER, filter)])
}

/// The `iptables-restore --noflush` input writing `tables` and deleting
/// the `stale` chains (table → chains): every chain written or deleted is
/// declared first, which flushes it.
pub fn restore_input(tables: &Tables, stale: &BTreeMap<&str, BTreeSet<String>>) -> String {
    let mut out = String::new();
    let none = BTreeSet::new();
    for (table, chains) in tables {
        let stale = stale.get(table).unwrap_or(&none);
        let _ = writeln!(out, "*{table}");
        for chain in chains.keys().chain(stale) {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for (chain, rules) in chains {
            for rule in rules {
                let _ = writeln!(out, "-A {chain} {rule}");
            }
        }
        for chain in stale {
            let _ = writeln!(out, "-X {chain}");
        }
        let _ = writeln!(out, "COMMIT");
    }
    out
}

/// The iptables side of the kernel.
#[async_trait::async_trait]
pub trait Iptables: Send + Sync {
    /// Feed `input` to `iptables-restore --noflush` (`ip6tables-restore` for
    /// IPv6): each table's part commits atomically.
    async fn restore(&self, family: Family, input: &str) -> Result<(), Error>;
    /// The user-defined chains of `table` (none when the tools are missing).
    async fn chains(&self, family: Family, table: &str) -> Result<Vec<String>, Error>;
    /// Insert `rule` first in the built-in `chain` unless it is there.
    async fn ensure_rule(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        rule: &[String],
    ) -> Result<(), Error>;
    /// Delete every copy of `rule` from `chain`; none is fine.
    async fn delete_rule(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        rule: &[String],
    ) -> Result<(), Error>;
}

/// The real tools: `iptables-restore -w 5 --noflush`, `iptables-save`,
/// `iptables -C/-I/-D` (the ip6tables ones for IPv6).
#[derive(Debug, Clone, Default)]
pub struct RealIptables;

/// Where the iptables tools of a family are: (name, installed path).
fn tool(family: Family, suffix: &str) -> (String, Option<String>) {
    let base = match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    };
    let name = format!("{base}{suffix}");
    let path = find_program(&name);
    (name, path)
}

fn failure(name: &str, out: &std::process::Output) -> Error {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let msg: Vec<&str> = stderr.lines().take(6).collect();
    Error::Iptables(format!("{name}: {}", msg.join("\n")))
}

async fn output(path: &str, args: &[&str], rule: &[String]) -> Result<std::process::Output, Error> {
    Command::new(path)
        .args(args)
        .args(rule)
        .output()
        .await
        .map_err(|source| Error::Spawn {
            cmd: path.to_string(),
            source,
        })
}

#[async_trait::async_trait]
impl Iptables for RealIptables {
    async fn restore(&self, family: Family, input: &str) -> Result<(), Error> {
        let (name, path) = tool(family, "-restore");
        let path = path.ok_or_else(|| Error::Iptables(format!("{name} is not installed")))?;
        let mut cmd = Command::new(&path);
        cmd.args(["-w", "5", "--noflush"]);
        let out = run_with_input(cmd, &path, input).await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failure(&name, &out))
        }
    }

    async fn chains(&self, family: Family, table: &str) -> Result<Vec<String>, Error> {
        let (name, Some(path)) = tool(family, "-save") else {
            return Ok(Vec::new());
        };
        let out = output(&path, &["-t", table], &[]).await?;
        if !out.status.success() {
            return Err(failure(&name, &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect())
    }

    async fn ensure_rule(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        rule: &[String],
    ) -> Result<(), Error> {
        let (name, path) = tool(family, "");
        let path = path.ok_or_else(|| Error::Iptables(format!("{name} is not installed")))?;
        if output(&path, &["-w", "5", "-t", table, "-C", chain], rule)
            .await?
            .status
            .success()
        {
            return Ok(());
        }
        let out = output(&path, &["-w", "5", "-t", table, "-I", chain, "1"], rule).await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failure(&name, &out))
        }
    }

    async fn delete_rule(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        rule: &[String],
    ) -> Result<(), Error> {
        let (_, Some(path)) = tool(family, "") else {
            return Ok(());
        };
        // `-D` fails once no copy is left (or the target chain is gone, so no rule can jump to it).
        for _ in 0..100 {
            let out = output(&path, &["-w", "5", "-t", table, "-D", chain], rule).await?;
            if !out.status.success() {
                break;
            }
        }
        Ok(())
    }
}

type Shared<T> = Arc<Mutex<T>>;

/// A rule in a built-in chain: (family, table, chain, rule arguments).
pub type BuiltinRule = (Family, String, String, Vec<String>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An [`Iptables`] that records restores (with the tokio clock's time) and
/// keeps the chains and built-in chain rules as the kernel would, refusing
/// what iptables-restore would refuse or what would leave duplicates
/// (appending to a chain the input does not declare, jumping to a missing
/// chain, deleting a missing one). Fails while `fail` is set.
#[derive(Default, Clone)]
pub struct IptablesRecorder {
    pub restores: Shared<Vec<(tokio::time::Instant, Family, String)>>,
    /// User-defined chains per (family, table).
    pub chains: Shared<BTreeMap<(Family, String), BTreeSet<String>>>,
    /// Rules in built-in chains: (family, table, chain, rule).
    pub rules: Shared<Vec<BuiltinRule>>,
    pub fail: Shared<bool>,
}

impl IptablesRecorder {
    /// The restore inputs since the last call.
    pub fn take(&self) -> Vec<String> {
        lock(&self.restores).drain(..).map(|(_, _, s)| s).collect()
    }

    /// The user-defined chains of `table` now.
    pub fn chains_of(&self, family: Family, table: &str) -> BTreeSet<String> {
        lock(&self.chains)
            .get(&(family, table.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    fn apply_table(chains: &mut BTreeSet<String>, lines: &[&str]) -> Result<(), String> {
        let declared: BTreeSet<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix(':')?.split_whitespace().next())
            .collect();
        chains.extend(declared.iter().map(|c| c.to_string()));
        for line in lines {
            if let Some(chain) = line.strip_prefix("-X ")
                && !chains.remove(chain.trim())
            {
                return Err(format!("deleting missing chain {chain}"));
            }
        }
        for line in lines {
            let Some(rest) = line.strip_prefix("-A ") else {
                continue;
            };
            let chain = rest.split_whitespace().next().unwrap_or_default();
            if !declared.contains(chain) {
                return Err(format!("appending to undeclared chain {chain}"));
            }
            if let Some(target) = rest
                .split(" -j ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                && !TARGETS.contains(&target)
                && !chains.contains(target)
            {
                return Err(format!("jump to missing chain {target}"));
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Iptables for IptablesRecorder {
    async fn restore(&self, family: Family, input: &str) -> Result<(), Error> {
        if *lock(&self.fail) {
            return Err(Error::Iptables("injected".into()));
        }
        let mut all = lock(&self.chains);
        let mut next = all.clone();
        let mut lines = input.lines().peekable();
        while let Some(line) = lines.next() {
            let Some(table) = line.strip_prefix('*') else {
                return Err(Error::Iptables(format!("unexpected line {line:?}")));
            };
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "COMMIT").collect();
            let chains = next.entry((family, table.to_string())).or_default();
            IptablesRecorder::apply_table(chains, &body).map_err(Error::Iptables)?;
        }
        // A chain still jumped to from a built-in chain cannot be deleted.
        for (f, table, _, rule) in lock(&self.rules).iter() {
            let target = rule.last().map(String::as_str).unwrap_or_default();
            if *f == family
                && !next
                    .get(&(*f, table.clone()))
                    .is_some_and(|c| c.contains(target))
            {
                return Err(Error::Iptables(format!("{target} is still referenced")));
            }
        }
        *all = next;
        lock(&self.restores).push((tokio::time::Instant::now(), family, input.to_string()));
        Ok(())
    }

    async fn chains(&self, family: Family, table: &str) -> Result<Vec<String>, Error> {
        Ok(self.chains_of(family, table).into_iter().collect())
    }

    async fn ensure_rule(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        rule: &[String],
    ) -> Result<(), Error> {
        let target = rule.last().cloned().unwrap_or_default();
        if !self.chains_of(family, table).contains(&target) {
            return Err(Error::Iptables(format!("no chain {target} to jump to")));
        }
        let entry = (family, table.to_string(), chain.to_string(), rule.to_vec());
        let mut rules = lock(&self.rules);
        if !rules.contains(&entry) {
            rules.insert(0, entry);
        }
        Ok(())
    }

    async fn delete_rule(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        rule: &[String],
    ) -> Result<(), Error> {
        lock(&self.rules).retain(|(f, t, c, r)| {
            !(*f == family && t == table && c == chain && r.as_slice() == rule)
        });
        Ok(())
    }
}

/// Which of our chains exist per (family, table).
type Programmed = BTreeMap<(Family, &'static str), BTreeSet<String>>;

/// The iptables proxier (↔ kube-proxy's iptables Proxier.syncProxyRules).
pub struct IptablesProxier<I> {
    config: Config,
    ipt: I,
    names: Names,
    families: Vec<Family>,
    desired: Desired,
    /// Our chains as of the last successful sync; None when unknown (at
    /// start and after a failure: then read from the kernel).
    programmed: Option<Programmed>,
    /// A full resync is due: the jump rules are checked too.
    resync: bool,
}

impl<I: Iptables> IptablesProxier<I> {
    pub fn new(config: Config, ipt: I) -> Self {
        IptablesProxier {
            names: Names::new(&config.table),
            families: config.families(),
            config,
            ipt,
            desired: Desired::default(),
            programmed: None,
            resync: true,
        }
    }

    pub fn iptables(&self) -> &I {
        &self.ipt
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    fn render(&self, family: Family) -> Tables {
        let ctx = RenderCtx {
            family,
            names: &self.names,
            cluster_cidrs: self.config.cluster_cidrs(family),
        };
        let mut services: Vec<(&ServiceName, &ServiceInfo)> =
            self.desired.services.iter().collect();
        services.sort_by_key(|(n, _)| *n);
        let rendered: Vec<ServiceRules> = services
            .into_iter()
            .map(|(name, info)| render_service(&ctx, name, info, &self.desired.slices_of(name)))
            .collect();
        ruleset(&self.names, family, &rendered)
    }

    async fn existing_chains(&self) -> Result<Programmed, Error> {
        let mut out = Programmed::new();
        for &family in &self.families {
            for table in [NAT, FILTER] {
                let ours = self
                    .ipt
                    .chains(family, table)
                    .await?
                    .into_iter()
                    .filter(|c| self.names.ours(c))
                    .collect();
                out.insert((family, table), ours);
            }
        }
        Ok(out)
    }

    /// Write the whole ruleset (one restore per family), deleting the chains
    /// no longer wanted; at a full resync also make sure of the jump rules.
    pub async fn sync(&mut self) -> Result<SyncStats, Error> {
        let result = self.sync_all().await;
        if result.is_err() {
            self.programmed = None;
            self.resync = true;
        }
        result
    }

    async fn sync_all(&mut self) -> Result<SyncStats, Error> {
        let mut programmed = match self.programmed.take() {
            Some(p) => p,
            None => self.existing_chains().await?,
        };
        let mut bytes = 0;
        for family in self.families.clone() {
            let tables = self.render(family);
            let stale: BTreeMap<&str, BTreeSet<String>> = tables
                .iter()
                .map(|(table, chains)| {
                    let gone = programmed
                        .get(&(family, *table))
                        .into_iter()
                        .flatten()
                        .filter(|c| !chains.contains_key(*c))
                        .cloned()
                        .collect();
                    (*table, gone)
                })
                .collect();
            let input = restore_input(&tables, &stale);
            self.ipt.restore(family, &input).await?;
            bytes += input.len();
            for (table, chains) in tables {
                programmed.insert((family, table), chains.into_keys().collect());
            }
        }
        if self.resync {
            for &family in &self.families {
                for (table, chain, rule) in self.names.jump_rules() {
                    self.ipt.ensure_rule(family, table, chain, &rule).await?;
                }
            }
        }
        self.programmed = Some(programmed);
        self.resync = false;
        self.desired.dirty.clear();
        Ok(SyncStats {
            full: true,
            services: self.desired.services.len(),
            script_bytes: bytes,
        })
    }
}

impl<I: Iptables> Syncer for IptablesProxier<I> {
    fn config(&self) -> &Config {
        &self.config
    }
    fn update(&mut self, update: Update) {
        self.desired.update(update);
    }
    fn ready(&self) -> bool {
        self.desired.ready()
    }
    fn has_pending(&self) -> bool {
        !self.desired.dirty.is_empty() || self.resync
    }
    fn request_resync(&mut self) {
        self.resync = true;
    }
    fn sync(&mut self) -> impl Future<Output = Result<SyncStats, Error>> + Send {
        IptablesProxier::sync(self)
    }
}

/// [`crate::run`] in iptables mode, with the kernel and host given.
pub async fn run_with<I: Iptables>(
    client: kube::Client,
    config: Config,
    ipt: I,
    host: &dyn Host,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    crate::run_syncer(client, IptablesProxier::new(config, ipt), host, shutdown).await
}

/// Remove the jump rules and every chain of the proxy whose table is
/// `table`, in both families (what is missing is fine). Chains of other
/// prefixes are never touched.
pub async fn cleanup(ipt: &dyn Iptables, table: &str) -> Result<(), Error> {
    let names = Names::new(table);
    let mut first_error = None;
    for family in [Family::V4, Family::V6] {
        if let Err(e) = cleanup_family(ipt, &names, family).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn cleanup_family(ipt: &dyn Iptables, names: &Names, family: Family) -> Result<(), Error> {
    for (table, chain, rule) in names.jump_rules() {
        ipt.delete_rule(family, table, chain, &rule).await?;
    }
    let mut stale = BTreeMap::new();
    for table in [NAT, FILTER] {
        let ours: BTreeSet<String> = ipt
            .chains(family, table)
            .await?
            .into_iter()
            .filter(|c| names.ours(c))
            .collect();
        if !ours.is_empty() {
            stale.insert(table, ours);
        }
    }
    if stale.is_empty() {
        return Ok(());
    }
    let tables: Tables = stale.keys().map(|t| (*t, BTreeMap::new())).collect();
    ipt.restore(family, &restore_input(&tables, &stale)).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proxier::run_loop;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// Table "t" (chain prefix `SK…`), batching changes for 1 s.
    fn config() -> Config {
        Config {
            table: "t".into(),
            min_sync_period: Duration::from_secs(1),
            ..Config::default()
        }
    }

    fn service(name: &str, ip: &str, extra: serde_json::Value) -> Service {
        let mut spec = json!({"clusterIP": ip, "ports": [{"name": "http", "port": 80}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec
        }))
        .unwrap()
    }

    fn slice(svc: &str, ips: &[&str]) -> EndpointSlice {
        let eps: Vec<_> = ips
            .iter()
            .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-abc"), "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps
        }))
        .unwrap()
    }

    /// A proxier with `services` and their slices listed and synced once;
    /// returns the first restore input.
    async fn synced(
        services: Vec<Service>,
        slices: Vec<EndpointSlice>,
    ) -> (IptablesProxier<IptablesRecorder>, IptablesRecorder, String) {
        let rec = IptablesRecorder::default();
        let mut p = IptablesProxier::new(config(), rec.clone());
        p.update(Update::ServicesListed(services));
        p.update(Update::SlicesListed(slices));
        assert!(Syncer::ready(&p));
        p.sync().await.unwrap();
        let input = rec.take().pop().unwrap();
        (p, rec, input)
    }

    /// The rules of `chain` in `table` of a restore input.
    fn chain_rules(input: &str, table: &str, chain: &str) -> Vec<String> {
        let part = input
            .split("COMMIT\n")
            .find(|t| t.starts_with(&format!("*{table}\n")))
            .unwrap();
        let prefix = format!("-A {chain} ");
        part.lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(String::from)
            .collect()
    }

    fn names() -> Names {
        Names::new("t")
    }

    fn svc_chain(svc: &str) -> String {
        names().chain("SVC", &format!("default/{svc}/tcp/http"))
    }

    fn sep_chain(svc: &str, ep: &str) -> String {
        names().chain("SEP", &format!("default/{svc}/tcp/http__{ep}"))
    }

    #[test]
    fn chain_names_are_prefixed_short_and_distinct() {
        assert_eq!(chain_prefix(DEFAULT_TABLE), "SKIFF");
        assert_eq!(Names::new(DEFAULT_TABLE).services, "SKIFF-SERVICES");
        let a = chain_prefix("skiff-test-100");
        let b = chain_prefix("skiff-test-102");
        assert_ne!(a, b);
        assert_eq!(a.len(), 6);
        assert!(a.starts_with("SK"));
        let n = Names::new("skiff-test-100");
        for c in [
            n.services.clone(),
            n.external_services.clone(),
            n.chain("SVC", "default/a-very-long-service-name/tcp/http"),
            n.chain("SEP", "x"),
        ] {
            assert!(c.len() <= MAX_CHAIN_LEN, "{c}");
            assert!(n.ours(&c));
        }
        assert_ne!(n.chain("SVC", "a"), n.chain("SVC", "b"));
        assert!(!n.ours(&format!("{a}X-SERVICES")));
        assert!(!n.ours("KUBE-SERVICES"));
    }

    #[tokio::test]
    async fn cluster_ip_with_two_endpoints() {
        let (_, rec, input) = synced(
            vec![service("web", "10.43.0.5", json!({}))],
            vec![slice("web", &["10.42.0.2", "10.42.0.3"])],
        )
        .await;
        let n = names();
        let svc = svc_chain("web");
        let (sep1, sep2) = (
            sep_chain("web", "10.42.0.2/8080"),
            sep_chain("web", "10.42.0.3/8080"),
        );
        assert!(input.starts_with("*filter\n"), "{input}");
        assert_eq!(
            chain_rules(&input, NAT, &n.services),
            vec![
                format!(
                    "-d 10.43.0.5 -p tcp -m tcp --dport 80 -m comment --comment \"default/web:http cluster IP\" -j {svc}"
                ),
                format!(
                    "-m comment --comment \"skiff service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j {}",
                    n.nodeports
                ),
            ]
        );
        assert_eq!(
            chain_rules(&input, NAT, &svc),
            vec![
                format!(
                    "! -s 10.42.0.0/16 -d 10.43.0.5 -p tcp -m tcp --dport 80 -m comment --comment \"default/web:http cluster IP\" -j {}",
                    n.mark_masq
                ),
                format!(
                    "-m comment --comment \"default/web:http -> 10.42.0.2:8080\" -m statistic --mode random --probability 0.5000000000 -j {sep1}"
                ),
                format!("-m comment --comment \"default/web:http -> 10.42.0.3:8080\" -j {sep2}"),
            ]
        );
        assert_eq!(
            chain_rules(&input, NAT, &sep1),
            vec![
                format!("-s 10.42.0.2 -m comment --comment \"default/web:http\" -j {}", n.mark_masq),
                "-p tcp -m comment --comment \"default/web:http\" -j DNAT --to-destination 10.42.0.2:8080".to_string(),
            ]
        );
        // No REJECT anywhere: the service has endpoints.
        assert!(!input.contains("REJECT"), "{input}");
        // Every chain written is declared (so flushed) in the same input, and exists afterwards.
        let chains = rec.chains_of(Family::V4, NAT);
        for c in [&svc, &sep1, &sep2, &n.services, &n.nodeports] {
            assert!(input.contains(&format!(":{c} - [0:0]\n")));
            assert!(chains.contains(c));
        }
    }

    #[tokio::test]
    async fn probabilities_follow_kube_proxy() {
        let (_, _, input) = synced(
            vec![service("web", "10.43.0.5", json!({}))],
            vec![slice("web", &["10.42.0.2", "10.42.0.3", "10.42.0.4"])],
        )
        .await;
        let rules = chain_rules(&input, NAT, &svc_chain("web"));
        let probabilities: Vec<&str> = rules
            .iter()
            .map(|r| {
                r.split("--probability ")
                    .nth(1)
                    .map(|p| p.split(' ').next().unwrap())
                    .unwrap_or("-")
            })
            .collect();
        assert_eq!(probabilities, ["-", "0.3333333333", "0.5000000000", "-"]);
        assert!(rules[3].ends_with(&format!("-j {}", sep_chain("web", "10.42.0.4/8080"))));
    }

    #[tokio::test]
    async fn node_port_and_external_ip_are_masqueraded() {
        let (_, _, input) = synced(
            vec![service(
                "web",
                "10.43.0.5",
                json!({"type": "NodePort", "externalIPs": ["192.0.2.9"], "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
            )],
            vec![slice("web", &["10.42.0.2"])],
        )
        .await;
        let n = names();
        let ext = n.chain("EXT", "default/web/tcp/http");
        let svc = svc_chain("web");
        assert_eq!(
            chain_rules(&input, NAT, &n.nodeports),
            vec![format!(
                "-p tcp -m tcp --dport 30080 -m comment --comment \"default/web:http\" -j {ext}"
            )]
        );
        assert_eq!(
            chain_rules(&input, NAT, &ext),
            vec![
                format!(
                    "-m comment --comment \"masquerade traffic for default/web:http external destinations\" -j {}",
                    n.mark_masq
                ),
                format!("-j {svc}"),
            ]
        );
        let portals = chain_rules(&input, NAT, &n.services);
        assert_eq!(portals.len(), 3, "{portals:?}");
        assert!(portals[1].starts_with("-d 192.0.2.9 -p tcp -m tcp --dport 80 "));
        assert!(portals[1].ends_with(&format!("-j {ext}")));
        assert!(portals[2].contains(&format!("-j {}", n.nodeports)));
        // The masquerade machinery.
        assert_eq!(
            chain_rules(&input, NAT, &n.mark_masq),
            vec!["-j MARK --or-mark 0x4000"]
        );
        assert_eq!(
            chain_rules(&input, NAT, &n.postrouting),
            vec![
                "-m mark ! --mark 0x4000/0x4000 -j RETURN",
                "-j MARK --xor-mark 0x4000",
                "-m comment --comment \"skiff service traffic requiring SNAT\" -j MASQUERADE --random-fully",
            ]
        );
    }

    #[tokio::test]
    async fn no_endpoints_rejects_in_the_filter_table() {
        let (_, _, input) = synced(
            vec![service(
                "api",
                "10.43.0.6",
                json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
            )],
            vec![slice("api", &[])],
        )
        .await;
        let n = names();
        assert_eq!(
            chain_rules(&input, FILTER, &n.services),
            vec![
                "-d 10.43.0.6 -p tcp -m tcp --dport 80 -m comment --comment \"default/api:http has no endpoints\" -j REJECT"
            ]
        );
        assert_eq!(
            chain_rules(&input, FILTER, &n.external_services),
            vec![
                "-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -p tcp -m tcp --dport 30081 -m comment --comment \"default/api:http has no endpoints\" -j REJECT"
            ]
        );
        assert!(!input.contains("-SVC-"), "{input}");
        assert!(!input.contains("DNAT"), "{input}");
    }

    #[tokio::test]
    async fn terminating_endpoints_serve_when_none_is_ready() {
        let mut s = slice("web", &["10.42.0.2"]);
        s.endpoints[0].conditions =
            serde_json::from_value(json!({"ready": false, "serving": true, "terminating": true}))
                .unwrap();
        let (_, _, input) = synced(vec![service("web", "10.43.0.5", json!({}))], vec![s]).await;
        assert!(
            input.contains("-j DNAT --to-destination 10.42.0.2:8080"),
            "{input}"
        );
        assert!(!input.contains("REJECT"));
    }

    #[tokio::test]
    async fn session_affinity_uses_recent() {
        let (_, _, input) = synced(
            vec![service(
                "web",
                "10.43.0.5",
                json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}),
            )],
            vec![slice("web", &["10.42.0.2", "10.42.0.3"])],
        )
        .await;
        let sep1 = sep_chain("web", "10.42.0.2/8080");
        let rules = chain_rules(&input, NAT, &svc_chain("web"));
        assert_eq!(rules.len(), 5, "{rules:?}");
        assert_eq!(
            rules[1],
            format!(
                "-m comment --comment \"default/web:http -> 10.42.0.2:8080\" -m recent --name {sep1} --rsource --rcheck --seconds 600 --reap -j {sep1}"
            )
        );
        assert!(rules[2].contains("--rcheck --seconds 600"));
        // The lookups come before the random choice.
        assert!(rules[3].contains("--probability 0.5000000000"));
        assert_eq!(
            chain_rules(&input, NAT, &sep1)[1],
            format!(
                "-p tcp -m comment --comment \"default/web:http\" -m recent --name {sep1} --rsource --set -j DNAT --to-destination 10.42.0.2:8080"
            )
        );
    }

    #[tokio::test]
    async fn a_deleted_service_loses_its_chains() {
        let (mut p, rec, _) = synced(
            vec![
                service("web", "10.43.0.5", json!({})),
                service("api", "10.43.0.6", json!({})),
            ],
            vec![slice("web", &["10.42.0.2"]), slice("api", &["10.42.0.4"])],
        )
        .await;
        let (api, api_sep) = (svc_chain("api"), sep_chain("api", "10.42.0.4/8080"));
        assert!(rec.chains_of(Family::V4, NAT).contains(&api));
        p.update(Update::ServiceDeleted(Box::new(service(
            "api",
            "10.43.0.6",
            json!({}),
        ))));
        assert!(Syncer::has_pending(&p));
        p.sync().await.unwrap();
        let input = rec.take().pop().unwrap();
        for c in [&api, &api_sep] {
            assert!(input.contains(&format!(":{c} - [0:0]\n")), "{input}");
            assert!(input.contains(&format!("\n-X {c}\n")), "{input}");
            assert!(!rec.chains_of(Family::V4, NAT).contains(c));
        }
        assert!(!input.contains("10.43.0.6"));
        assert!(input.contains("10.43.0.5"));
        // Deleted once: the next sync does not mention them.
        p.request_resync();
        p.sync().await.unwrap();
        let input = rec.take().pop().unwrap();
        assert!(!input.contains(&api), "{input}");
        // The endpoint change alone swaps the endpoint chain.
        p.update(Update::SliceApplied(Box::new(slice("web", &["10.42.0.7"]))));
        p.sync().await.unwrap();
        let input = rec.take().pop().unwrap();
        assert!(input.contains(&format!("-X {}\n", sep_chain("web", "10.42.0.2/8080"))));
        assert!(input.contains("--to-destination 10.42.0.7:8080"));
    }

    #[tokio::test]
    async fn jumps_once_stale_chains_at_start_and_cleanup() {
        let rec = IptablesRecorder::default();
        // Left by an earlier run of this proxy, and another proxy's chain.
        let old = names().chain("SVC", "default/gone/tcp/http");
        let other = Names::new("other").services;
        lock(&rec.chains).insert(
            (Family::V4, NAT.to_string()),
            BTreeSet::from([old.clone(), other.clone()]),
        );
        let mut p = IptablesProxier::new(config(), rec.clone());
        p.update(Update::ServicesListed(vec![service(
            "web",
            "10.43.0.5",
            json!({}),
        )]));
        p.update(Update::SlicesListed(vec![slice("web", &["10.42.0.2"])]));
        p.sync().await.unwrap();
        let input = rec.take().pop().unwrap();
        assert!(input.contains(&format!("-X {old}\n")), "{input}");
        assert!(!input.contains(&other));
        let n = names();
        let jumps: Vec<(String, String)> = lock(&rec.rules)
            .iter()
            .map(|(_, t, c, r)| (format!("{t}/{c}"), r.last().cloned().unwrap()))
            .collect();
        assert_eq!(jumps.len(), 7, "{jumps:?}");
        for (where_, target) in [
            ("nat/PREROUTING", &n.services),
            ("nat/OUTPUT", &n.services),
            ("nat/POSTROUTING", &n.postrouting),
            ("filter/INPUT", &n.external_services),
            ("filter/FORWARD", &n.services),
            ("filter/OUTPUT", &n.services),
        ] {
            assert!(
                jumps.contains(&(where_.to_string(), target.clone())),
                "{where_}"
            );
        }
        // A change does not add jumps again; a failure re-reads the kernel and re-checks them.
        *lock(&rec.fail) = true;
        p.update(Update::SliceApplied(Box::new(slice("web", &["10.42.0.3"]))));
        assert!(p.sync().await.is_err());
        assert!(Syncer::has_pending(&p));
        *lock(&rec.fail) = false;
        lock(&rec.rules).clear();
        p.sync().await.unwrap();
        assert_eq!(lock(&rec.rules).len(), 7);
        assert!(
            rec.take().pop().unwrap().contains("-X "),
            "the stale endpoint chain found again"
        );

        cleanup(&rec, "t").await.unwrap();
        assert!(lock(&rec.rules).is_empty());
        let left: Vec<String> = [NAT, FILTER]
            .into_iter()
            .flat_map(|t| rec.chains_of(Family::V4, t))
            .collect();
        assert_eq!(left, vec![other], "only the other proxy's chain is left");
        // Nothing left: cleaning up again does nothing.
        rec.take();
        cleanup(&rec, "t").await.unwrap();
        assert!(rec.take().is_empty());
    }

    #[tokio::test]
    async fn ipv6_is_programmed_with_ip6tables() {
        let rec = IptablesRecorder::default();
        let mut p = IptablesProxier::new(
            Config {
                cluster_cidr: vec![
                    "10.42.0.0/16".parse().unwrap(),
                    "fd42::/64".parse().unwrap(),
                ],
                ..config()
            },
            rec.clone(),
        );
        let mut svc = service("web", "10.43.0.5", json!({}));
        svc.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.43.0.5".into(), "fd43::5".into()]);
        let mut v6 = slice("web", &["fd42::2"]);
        v6.address_type = "IPv6".into();
        v6.metadata.name = Some("web-v6".into());
        p.update(Update::ServicesListed(vec![svc]));
        p.update(Update::SlicesListed(vec![slice("web", &["10.42.0.2"]), v6]));
        p.sync().await.unwrap();
        let restores = lock(&rec.restores).clone();
        assert_eq!(restores.len(), 2);
        let (f4, in4) = (restores[0].1, &restores[0].2);
        let (f6, in6) = (restores[1].1, &restores[1].2);
        assert_eq!((f4, f6), (Family::V4, Family::V6));
        assert!(in4.contains("--to-destination 10.42.0.2:8080") && !in4.contains("fd42"));
        assert!(in6.contains("--to-destination [fd42::2]:8080"), "{in6}");
        assert!(in6.contains("! -s fd42::/64 -d fd43::5 "));
        assert!(in6.contains("! -d ::1 -j "));
    }

    #[tokio::test(start_paused = true)]
    async fn run_loop_batches_iptables_syncs() {
        let rec = IptablesRecorder::default();
        let mut p = IptablesProxier::new(config(), rec.clone());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(async move {
            run_loop(&mut p, &mut rx, async {
                let _ = stop_rx.await;
            })
            .await;
        });
        tx.send(Update::ServicesListed(vec![service(
            "web",
            "10.43.0.5",
            json!({}),
        )]))
        .unwrap();
        tx.send(Update::SlicesListed(vec![slice("web", &["10.42.0.2"])]))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(lock(&rec.restores).len(), 1, "the first sync is immediate");
        for ip in ["10.42.0.3", "10.42.0.4"] {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(Update::SliceApplied(Box::new(slice("web", &[ip]))))
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        {
            let restores = lock(&rec.restores);
            assert_eq!(restores.len(), 2, "two changes, one restore");
            assert_eq!(restores[1].0 - start, Duration::from_secs(1));
            assert!(restores[1].2.contains("10.42.0.4:8080"));
            assert!(!restores[1].2.contains("10.42.0.3:8080"));
        }
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }
}
