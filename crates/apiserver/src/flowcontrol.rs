//! Overload control: API Priority and Fairness (simplified), or
//! max-inflight when it is turned off, as kube-apiserver's
//! `--enable-priority-and-fairness`, `--max-requests-inflight` and
//! `--max-mutating-requests-inflight`.
//!
//! Every request that is not long-running (watches included: they hold a
//! seat while they start) is classified after authentication and
//! impersonation into a priority level, by who asks, as Kubernetes'
//! suggested FlowSchemas do:
//!
//! | level | who | shares |
//! |---|---|---|
//! | exempt | system:masters | no limit |
//! | node-high | system:nodes on nodes and leases (heartbeats) | 40 |
//! | system | system:nodes otherwise; kube-proxy and the node components | 30 |
//! | leader-election | the scheduler and controller managers on leases | 10 |
//! | workload-high | the scheduler and controller managers; kube-system service accounts | 40 |
//! | workload-low | other service accounts | 100 |
//! | global-default | every other authenticated user | 20 |
//! | catch-all | anyone else | 5 |
//!
//! The server's seats (the sum of the two max-inflight flags: 600 in
//! kube-apiserver, 60 per CPU on a `skiff server` of fewer than 10 CPUs,
//! since its requests are CPU work rather than waits on etcd) are shared
//! out by shares. A request takes one seat, a LIST
//! one per 100 objects it walks (at most 10), as Kubernetes' work
//! estimator. When its level is full a request waits in its **flow**'s
//! queue (one flow per user), and freed seats go round-robin over the
//! flows that wait, so a client that floods a level only lengthens its own
//! queue. A full queue (50 requests), or a wait beyond the queue wait
//! limit (15 s, a quarter of the request timeout), is answered 429 with
//! Retry-After. What this leaves out of APF: the FlowSchema and
//! PriorityLevelConfiguration objects (the configuration is fixed), seat
//! borrowing between levels, and shuffle sharding (queues are per flow).
//!
//! With priority and fairness off, mutating and read-only requests each
//! have their own limit and a full one answers 429 at once; system:masters
//! is never limited. Long-running requests (exec, attach, port-forward,
//! proxy, followed logs) are outside both, as upstream; watches are
//! bounded per user instead ([`WatchCounts`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::authz::{Attributes, MASTERS, UserInfo};
use crate::status::ApiError;

/// How the server limits what runs at once.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// API Priority and Fairness (true) or plain max-inflight (false).
    pub priority_and_fairness: bool,
    /// Read-only requests in flight (0: no limit when APF is off).
    pub max_requests_inflight: usize,
    /// Mutating requests in flight (0: no limit when APF is off).
    pub max_mutating_requests_inflight: usize,
    /// How long a request may wait in its queue.
    pub queue_wait: Duration,
    /// Requests one flow may have waiting in one level.
    pub queue_length: usize,
    /// Watches one user may have open (0: no limit).
    pub max_watches_per_user: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            priority_and_fairness: true,
            max_requests_inflight: inflight_default(400),
            max_mutating_requests_inflight: inflight_default(200),
            queue_wait: Duration::from_secs(15),
            queue_length: 50,
            max_watches_per_user: 4096,
        }
    }
}

/// A max-inflight default: kube-apiserver's, scaled down on machines of
/// fewer than 10 CPUs (40 and 20 per CPU). kube-apiserver's handlers
/// mostly wait on etcd; skiff serves reads from memory, so its requests in
/// flight are CPU work, and seats beyond a few dozen per CPU only let one
/// client's requests crowd out everyone else's (`skiff bench overload`).
pub fn inflight_default(kubernetes: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    kubernetes.min(kubernetes / 10 * cpus)
}

/// The priority levels, in the order of [`LEVELS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Exempt,
    NodeHigh,
    System,
    LeaderElection,
    WorkloadHigh,
    WorkloadLow,
    GlobalDefault,
    CatchAll,
}

/// Name and shares of each level (Kubernetes' suggested configuration).
const LEVELS: [(Level, &str, usize); 8] = [
    (Level::Exempt, "exempt", 0),
    (Level::NodeHigh, "node-high", 40),
    (Level::System, "system", 30),
    (Level::LeaderElection, "leader-election", 10),
    (Level::WorkloadHigh, "workload-high", 40),
    (Level::WorkloadLow, "workload-low", 100),
    (Level::GlobalDefault, "global-default", 20),
    (Level::CatchAll, "catch-all", 5),
];

impl Level {
    fn index(self) -> usize {
        LEVELS.iter().position(|(l, _, _)| *l == self).unwrap_or(0)
    }

    pub fn name(self) -> &'static str {
        LEVELS[self.index()].1
    }
}

/// Users of the control plane's own components.
const CONTROL_PLANE: [&str; 3] = [
    "system:kube-controller-manager",
    "system:kube-scheduler",
    "system:skiff-controller-manager",
];

/// The priority level of a request (the suggested FlowSchemas, in their
/// order of precedence).
pub fn classify(attrs: &Attributes) -> Level {
    let user = &attrs.user;
    let in_group = |g: &str| user.groups.iter().any(|x| x == g);
    if in_group(MASTERS) {
        return Level::Exempt;
    }
    let resource = attrs.resource.as_str();
    let leases = attrs.api_group == "coordination.k8s.io" && resource == "leases";
    if in_group("system:nodes") {
        return if leases || (attrs.api_group.is_empty() && resource == "nodes") {
            Level::NodeHigh
        } else {
            Level::System
        };
    }
    if CONTROL_PLANE.contains(&user.name.as_str()) {
        return if leases {
            Level::LeaderElection
        } else {
            Level::WorkloadHigh
        };
    }
    if user.name == "system:kube-proxy" || user.name.starts_with("system:skiff-") {
        return Level::System;
    }
    if in_group("system:serviceaccounts") {
        return if in_group("system:serviceaccounts:kube-system") {
            Level::WorkloadHigh
        } else {
            Level::WorkloadLow
        };
    }
    if in_group(crate::authz::AUTHENTICATED) {
        Level::GlobalDefault
    } else {
        Level::CatchAll
    }
}

/// Whether a request runs for long (kube-apiserver's
/// BasicLongRunningRequestCheck): watches, proxying, and the attach, exec,
/// log, port-forward and proxy subresources. These have no request
/// timeout, and all but watches are outside flow control.
pub fn long_running(attrs: &Attributes) -> bool {
    matches!(attrs.verb.as_str(), "watch" | "proxy")
        || (attrs.resource_request
            && matches!(
                attrs.subresource.as_str(),
                "attach" | "exec" | "proxy" | "log" | "portforward"
            ))
}

/// What a request costs in seats: one, or for a LIST (and a
/// deletecollection, and a watch's initial list) one per 100 objects it
/// walks, at most 10 (Kubernetes' list work estimator).
pub fn width(collection_read: bool, objects: usize) -> u32 {
    if !collection_read {
        return 1;
    }
    u32::try_from(objects.div_ceil(100))
        .unwrap_or(u32::MAX)
        .clamp(1, 10)
}

/// A running request's hold on the server; dropping it frees the seats.
pub struct Seat {
    _inner: SeatInner,
}

enum SeatInner {
    Unlimited,
    Inflight {
        _permit: OwnedSemaphorePermit,
    },
    Level {
        level: Arc<PriorityLevel>,
        width: u32,
    },
}

impl Drop for SeatInner {
    fn drop(&mut self) {
        if let SeatInner::Level { level, width } = self {
            level.release(*width);
        }
    }
}

struct Waiter {
    id: u64,
    width: u32,
    tx: oneshot::Sender<()>,
}

#[derive(Default)]
struct LevelState {
    in_use: u32,
    /// The waiting requests of each flow that has some.
    flows: HashMap<String, VecDeque<Waiter>>,
    /// Flows with waiting requests, in round-robin order.
    turn: VecDeque<String>,
    waiting: usize,
}

struct PriorityLevel {
    name: &'static str,
    seats: u32,
    queue_length: usize,
    state: Mutex<LevelState>,
    rejected: AtomicU64,
    dispatched: AtomicU64,
}

impl PriorityLevel {
    fn lock(&self) -> MutexGuard<'_, LevelState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, width: u32) {
        let mut st = self.lock();
        st.in_use = st.in_use.saturating_sub(width);
        self.dispatch(&mut st);
    }

    /// Hand free seats to waiting requests, one flow after another.
    fn dispatch(&self, st: &mut LevelState) {
        while let Some(flow) = st.turn.pop_front() {
            let Some(queue) = st.flows.get_mut(&flow) else {
                continue;
            };
            // Requests whose clients went away give their place up.
            while queue.front().is_some_and(|w| w.tx.is_closed()) {
                queue.pop_front();
                st.waiting = st.waiting.saturating_sub(1);
            }
            let Some(head) = queue.front() else {
                st.flows.remove(&flow);
                continue;
            };
            if st.in_use.saturating_add(head.width) > self.seats {
                // The head waits for enough seats; nobody overtakes it.
                st.turn.push_front(flow);
                return;
            }
            let Some(head) = queue.pop_front() else {
                continue;
            };
            let empty = queue.is_empty();
            st.waiting = st.waiting.saturating_sub(1);
            if head.tx.send(()).is_ok() {
                st.in_use = st.in_use.saturating_add(head.width);
                self.dispatched.fetch_add(1, Ordering::Relaxed);
            }
            if empty {
                st.flows.remove(&flow);
            } else {
                st.turn.push_back(flow);
            }
        }
    }
}

/// The server's overload control (see the module documentation).
pub struct FlowControl {
    config: Config,
    levels: Vec<Arc<PriorityLevel>>,
    readonly: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
    next_waiter: AtomicU64,
    rejected_inflight: AtomicU64,
    pub watches: Arc<WatchCounts>,
}

impl FlowControl {
    pub fn new(config: Config) -> FlowControl {
        let total = config
            .max_requests_inflight
            .saturating_add(config.max_mutating_requests_inflight)
            .max(1);
        let shares: usize = LEVELS.iter().map(|(_, _, s)| s).sum();
        let levels = LEVELS
            .iter()
            .map(|(_, name, share)| {
                // Nominal seats: the level's share of the total, at least one.
                let seats = total.saturating_mul(*share).div_ceil(shares.max(1)).max(1);
                Arc::new(PriorityLevel {
                    name,
                    seats: u32::try_from(seats).unwrap_or(u32::MAX),
                    queue_length: config.queue_length.max(1),
                    state: Mutex::new(LevelState::default()),
                    rejected: AtomicU64::new(0),
                    dispatched: AtomicU64::new(0),
                })
            })
            .collect();
        let semaphore = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        FlowControl {
            levels,
            readonly: semaphore(config.max_requests_inflight),
            mutating: semaphore(config.max_mutating_requests_inflight),
            next_waiter: AtomicU64::new(0),
            rejected_inflight: AtomicU64::new(0),
            watches: Arc::new(WatchCounts::new(config.max_watches_per_user)),
            config,
        }
    }

    /// Wait for a seat for a request at `level`, in `flow`'s queue, of
    /// `width` seats (`mutating` matters only with APF off).
    pub async fn admit(
        &self,
        level: Level,
        flow: &str,
        width: u32,
        mutating: bool,
    ) -> Result<Seat, ApiError> {
        if level == Level::Exempt {
            return Ok(Seat {
                _inner: SeatInner::Unlimited,
            });
        }
        if !self.config.priority_and_fairness {
            let limit = if mutating {
                &self.mutating
            } else {
                &self.readonly
            };
            let Some(limit) = limit else {
                return Ok(Seat {
                    _inner: SeatInner::Unlimited,
                });
            };
            return match limit.clone().try_acquire_owned() {
                Ok(p) => Ok(Seat {
                    _inner: SeatInner::Inflight { _permit: p },
                }),
                Err(_) => {
                    self.rejected_inflight.fetch_add(1, Ordering::Relaxed);
                    Err(too_many_requests())
                }
            };
        }
        let level = self.levels[level.index()].clone();
        let width = width.clamp(1, level.seats);
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let rx = {
            let mut st = level.lock();
            if st.waiting == 0 && st.in_use.saturating_add(width) <= level.seats {
                st.in_use += width;
                drop(st);
                level.dispatched.fetch_add(1, Ordering::Relaxed);
                return Ok(Seat {
                    _inner: SeatInner::Level { level, width },
                });
            }
            let queued = st.flows.get(flow).map_or(0, VecDeque::len);
            if queued >= level.queue_length {
                drop(st);
                level.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(too_many_requests());
            }
            let (tx, rx) = oneshot::channel();
            let queue = st.flows.entry(flow.to_string()).or_default();
            queue.push_back(Waiter { id, width, tx });
            if queued == 0 {
                st.turn.push_back(flow.to_string());
            }
            st.waiting += 1;
            rx
        };
        let mut waiting = Waiting {
            level: &level,
            flow,
            id,
            width,
            rx,
            settled: false,
        };
        let granted = match tokio::time::timeout(self.config.queue_wait, &mut waiting.rx).await {
            Ok(Ok(())) => true,
            // Timed out: leave the queue, unless the seats were given
            // meanwhile, in which case the request runs after all.
            _ => waiting.leave(),
        };
        waiting.settled = true;
        if granted {
            Ok(Seat {
                _inner: SeatInner::Level {
                    level: level.clone(),
                    width,
                },
            })
        } else {
            level.rejected.fetch_add(1, Ordering::Relaxed);
            Err(too_many_requests())
        }
    }

    /// The flow control's metrics, in Prometheus' text format, under
    /// kube-apiserver's names.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        type Family = (
            &'static str,
            &'static str,
            &'static str,
            fn(&PriorityLevel, u32, usize) -> f64,
        );
        let families: [Family; 5] = [
            (
                "apiserver_flowcontrol_nominal_limit_seats",
                "gauge",
                "Nominal number of execution seats configured for each priority level.",
                |l, _, _| f64::from(l.seats),
            ),
            (
                "apiserver_flowcontrol_current_executing_seats",
                "gauge",
                "Concurrency (number of seats) occupied by the currently executing requests.",
                |_, in_use, _| f64::from(in_use),
            ),
            (
                "apiserver_flowcontrol_current_inqueue_requests",
                "gauge",
                "Number of requests currently pending in queues.",
                |_, _, waiting| waiting as f64,
            ),
            (
                "apiserver_flowcontrol_rejected_requests_total",
                "counter",
                "Number of requests rejected by API Priority and Fairness.",
                |l, _, _| l.rejected.load(Ordering::Relaxed) as f64,
            ),
            (
                "apiserver_flowcontrol_dispatched_requests_total",
                "counter",
                "Number of requests executed by API Priority and Fairness.",
                |l, _, _| l.dispatched.load(Ordering::Relaxed) as f64,
            ),
        ];
        let now: Vec<(u32, usize)> = self
            .levels
            .iter()
            .map(|l| {
                let st = l.lock();
                (st.in_use, st.waiting)
            })
            .collect();
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (l, (in_use, waiting)) in self.levels.iter().zip(&now).skip(1) {
                let _ = writeln!(
                    out,
                    "{name}{{priority_level=\"{}\"}} {}",
                    l.name,
                    value(l, *in_use, *waiting)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP apiserver_dropped_requests_total Number of requests dropped by max-inflight with 'Try again later' response.\n# TYPE apiserver_dropped_requests_total counter\napiserver_dropped_requests_total {}",
            self.rejected_inflight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP apiserver_longrunning_requests Gauge of all active long-running apiserver requests.\n# TYPE apiserver_longrunning_requests gauge\napiserver_longrunning_requests{{verb=\"WATCH\"}} {}",
            self.watches.total()
        );
    }
}

/// A request's place in its flow's queue. If the request goes away while
/// it waits (its client disconnected), it leaves the queue, and seats
/// handed to it meanwhile go back.
struct Waiting<'a> {
    level: &'a Arc<PriorityLevel>,
    flow: &'a str,
    id: u64,
    width: u32,
    rx: oneshot::Receiver<()>,
    settled: bool,
}

impl Waiting<'_> {
    /// Leave the queue; true if the seats had been handed over already
    /// (the dispatcher sends under the lock, so it is decided here).
    fn leave(&mut self) -> bool {
        let mut st = self.level.lock();
        let at = st
            .flows
            .get(self.flow)
            .and_then(|q| q.iter().position(|w| w.id == self.id));
        if let Some(at) = at {
            let mut empty = false;
            if let Some(queue) = st.flows.get_mut(self.flow) {
                queue.remove(at);
                empty = queue.is_empty();
            }
            if empty {
                st.flows.remove(self.flow);
                st.turn.retain(|f| f != self.flow);
            }
            st.waiting = st.waiting.saturating_sub(1);
            // Those behind it may fit now (it may have been a wide head).
            self.level.dispatch(&mut st);
            return false;
        }
        self.rx.try_recv().is_ok()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.settled && self.leave() {
            self.level.release(self.width);
        }
    }
}

fn too_many_requests() -> ApiError {
    let mut e = ApiError::new(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.",
    );
    e.retry_after = Some(1);
    e
}

/// Open watches per user, bounded (security review I5).
pub struct WatchCounts {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open watch; dropping it closes it.
pub struct WatchSlot {
    counts: Arc<WatchCounts>,
    user: String,
}

impl WatchCounts {
    fn new(max: usize) -> WatchCounts {
        WatchCounts {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open a watch for `user`, or 429 when they have `max` open.
    pub fn open(self: &Arc<Self>, user: &UserInfo) -> Result<WatchSlot, ApiError> {
        let mut open = self.lock();
        let n = open.entry(user.name.clone()).or_default();
        if self.max > 0 && *n >= self.max {
            return Err(ApiError::new(
                429,
                "TooManyRequests",
                format!(
                    "Too many requests: user {:?} has {} watches open, the most allowed",
                    user.name, self.max
                ),
            ));
        }
        *n += 1;
        Ok(WatchSlot {
            counts: self.clone(),
            user: user.name.clone(),
        })
    }

    pub fn total(&self) -> usize {
        self.lock().values().sum()
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.counts.lock();
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn attrs(user: &str, groups: &[&str], group: &str, resource: &str) -> Attributes {
        Attributes {
            user: UserInfo {
                name: user.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                ..Default::default()
            },
            verb: "update".into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            ..Default::default()
        }
    }

    #[test]
    fn requests_are_classified_as_the_suggested_flow_schemas() {
        let auth = crate::authz::AUTHENTICATED;
        let cases = [
            (attrs("admin", &[MASTERS, auth], "", "pods"), Level::Exempt),
            (
                attrs(
                    "system:node:a",
                    &["system:nodes", auth],
                    "coordination.k8s.io",
                    "leases",
                ),
                Level::NodeHigh,
            ),
            (
                attrs("system:node:a", &["system:nodes", auth], "", "nodes"),
                Level::NodeHigh,
            ),
            (
                attrs("system:node:a", &["system:nodes", auth], "", "pods"),
                Level::System,
            ),
            (
                attrs(
                    "system:kube-scheduler",
                    &[auth],
                    "coordination.k8s.io",
                    "leases",
                ),
                Level::LeaderElection,
            ),
            (
                attrs(
                    "system:kube-controller-manager",
                    &[auth],
                    "apps",
                    "deployments",
                ),
                Level::WorkloadHigh,
            ),
            (
                attrs("system:kube-proxy", &[auth], "", "services"),
                Level::System,
            ),
            (
                attrs(
                    "system:serviceaccount:kube-system:x",
                    &[
                        "system:serviceaccounts",
                        "system:serviceaccounts:kube-system",
                        auth,
                    ],
                    "",
                    "pods",
                ),
                Level::WorkloadHigh,
            ),
            (
                attrs(
                    "system:serviceaccount:web:x",
                    &["system:serviceaccounts", "system:serviceaccounts:web", auth],
                    "",
                    "pods",
                ),
                Level::WorkloadLow,
            ),
            (attrs("alice", &[auth], "", "pods"), Level::GlobalDefault),
            (
                attrs("system:anonymous", &["system:unauthenticated"], "", "pods"),
                Level::CatchAll,
            ),
        ];
        for (a, want) in cases {
            assert_eq!(classify(&a), want, "{} {:?}", a.user.name, a.resource);
        }
    }

    #[test]
    fn a_list_costs_a_seat_per_hundred_objects_up_to_ten() {
        assert_eq!(width(false, 100_000), 1);
        assert_eq!(width(true, 0), 1);
        assert_eq!(width(true, 100), 1);
        assert_eq!(width(true, 101), 2);
        assert_eq!(width(true, 150_000), 10);
    }

    #[test]
    fn seats_are_shared_out_by_shares() {
        let fc = FlowControl::new(Config {
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            ..Config::default()
        });
        let seats = |l: Level| fc.levels[l.index()].seats;
        // 600 seats over 245 shares, rounded up, as kube-apiserver.
        assert_eq!(seats(Level::WorkloadLow), 245);
        assert_eq!(seats(Level::GlobalDefault), 49);
        assert_eq!(seats(Level::NodeHigh), 98);
        assert_eq!(seats(Level::CatchAll), 13);
    }

    /// One seat per level: the total is 1.
    fn one_seat(queue_length: usize) -> FlowControl {
        FlowControl::new(Config {
            max_requests_inflight: 1,
            max_mutating_requests_inflight: 0,
            queue_length,
            ..Config::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn freed_seats_go_round_robin_over_the_flows_that_wait() {
        let fc = Arc::new(one_seat(50));
        let first = fc
            .admit(Level::GlobalDefault, "noisy", 1, false)
            .await
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let mut spawn = |flow: &'static str, n: usize| {
            let (fc, order) = (fc.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _seat = fc
                    .admit(Level::GlobalDefault, flow, 1, false)
                    .await
                    .unwrap();
                order.lock().unwrap().push(format!("{flow}{n}"));
            }));
        };
        for n in 0..5 {
            spawn("noisy", n);
        }
        tokio::task::yield_now().await;
        spawn("quiet", 0);
        tokio::task::yield_now().await;
        assert_eq!(fc.levels[Level::GlobalDefault.index()].lock().waiting, 6);
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        // The quiet flow's one request goes second, not after the five.
        assert_eq!(&order[..3], ["noisy0", "quiet0", "noisy1"], "{order:?}");
        assert_eq!(fc.levels[Level::GlobalDefault.index()].lock().in_use, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_or_a_long_wait_is_answered_429() {
        let fc = Arc::new(one_seat(2));
        let held = fc.admit(Level::GlobalDefault, "a", 1, false).await.unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let fc = fc.clone();
                tokio::spawn(async move {
                    fc.admit(Level::GlobalDefault, "a", 1, false)
                        .await
                        .map(|_| ())
                })
            })
            .collect();
        tokio::task::yield_now().await;
        // The flow's queue holds two: the third is refused at once.
        let e = fc
            .admit(Level::GlobalDefault, "a", 1, false)
            .await
            .err()
            .unwrap();
        assert_eq!(
            (e.code, &*e.reason, e.retry_after),
            (429, "TooManyRequests", Some(1))
        );
        // Other levels are not affected.
        drop(fc.admit(Level::WorkloadLow, "a", 1, false).await.unwrap());
        // Nobody frees the seat: the waiters give up after the queue wait.
        tokio::time::advance(Duration::from_secs(16)).await;
        for w in waiters {
            assert_eq!(w.await.unwrap().err().unwrap().code, 429);
        }
        let level = &fc.levels[Level::GlobalDefault.index()];
        assert_eq!(level.lock().waiting, 0);
        assert!(level.lock().flows.is_empty());
        drop(held);
        assert_eq!(level.lock().in_use, 0);
        assert_eq!(level.rejected.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_goes_away_leaves_the_queue() {
        let fc = Arc::new(one_seat(50));
        let held = fc.admit(Level::GlobalDefault, "a", 1, false).await.unwrap();
        let waiter = {
            let fc = fc.clone();
            tokio::spawn(async move {
                fc.admit(Level::GlobalDefault, "b", 1, false)
                    .await
                    .map(|_| ())
            })
        };
        tokio::task::yield_now().await;
        let level = &fc.levels[Level::GlobalDefault.index()];
        assert_eq!(level.lock().waiting, 1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(level.lock().waiting, 0);
        drop(held);
        assert_eq!(level.lock().in_use, 0);
        // The seat is free for the next one at once.
        drop(fc.admit(Level::GlobalDefault, "c", 1, false).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wide_request_waits_for_enough_seats() {
        let fc = Arc::new(FlowControl::new(Config {
            max_requests_inflight: 245,
            max_mutating_requests_inflight: 0,
            ..Config::default()
        }));
        // global-default has 20 seats.
        let level = fc.levels[Level::GlobalDefault.index()].clone();
        assert_eq!(level.seats, 20);
        let a = fc
            .admit(Level::GlobalDefault, "a", 10, false)
            .await
            .unwrap();
        let b = fc.admit(Level::GlobalDefault, "a", 5, false).await.unwrap();
        let wide = {
            let fc = fc.clone();
            tokio::spawn(async move {
                fc.admit(Level::GlobalDefault, "b", 10, false)
                    .await
                    .map(|_| ())
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(level.lock().waiting, 1);
        // A narrow request of another flow does not overtake it.
        let narrow = {
            let fc = fc.clone();
            tokio::spawn(async move {
                fc.admit(Level::GlobalDefault, "c", 1, false)
                    .await
                    .map(|_| ())
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(level.lock().waiting, 2);
        drop(b);
        wide.await.unwrap().unwrap();
        narrow.await.unwrap().unwrap();
        drop(a);
        assert_eq!(level.lock().in_use, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn when_a_wide_head_gives_up_those_behind_it_run() {
        let fc = Arc::new(FlowControl::new(Config {
            max_requests_inflight: 245,
            max_mutating_requests_inflight: 0,
            ..Config::default()
        }));
        let level = fc.levels[Level::GlobalDefault.index()].clone();
        let _held = fc
            .admit(Level::GlobalDefault, "a", 15, false)
            .await
            .unwrap();
        let wide = {
            let fc = fc.clone();
            tokio::spawn(async move {
                fc.admit(Level::GlobalDefault, "b", 10, false)
                    .await
                    .map(|_| ())
            })
        };
        tokio::time::advance(Duration::from_secs(10)).await;
        let narrow = {
            let fc = fc.clone();
            tokio::spawn(async move {
                fc.admit(Level::GlobalDefault, "c", 1, false)
                    .await
                    .map(|_| ())
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(level.lock().waiting, 2);
        // The wide one times out at 15 s; the narrow one, which fits, runs then.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(wide.await.unwrap().err().unwrap().code, 429);
        narrow.await.unwrap().unwrap();
        assert_eq!(level.rejected.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn without_priority_and_fairness_each_kind_has_its_own_limit() {
        let fc = FlowControl::new(Config {
            priority_and_fairness: false,
            max_requests_inflight: 1,
            max_mutating_requests_inflight: 1,
            ..Config::default()
        });
        let r = fc.admit(Level::GlobalDefault, "a", 1, false).await.unwrap();
        let w = fc.admit(Level::GlobalDefault, "a", 1, true).await.unwrap();
        assert_eq!(
            fc.admit(Level::NodeHigh, "n", 1, false)
                .await
                .err()
                .unwrap()
                .code,
            429
        );
        assert_eq!(
            fc.admit(Level::NodeHigh, "n", 1, true)
                .await
                .err()
                .unwrap()
                .code,
            429
        );
        // system:masters is never limited.
        drop(fc.admit(Level::Exempt, "admin", 1, true).await.unwrap());
        drop((r, w));
        drop(fc.admit(Level::NodeHigh, "n", 1, true).await.unwrap());
    }

    #[test]
    fn watches_are_bounded_per_user() {
        let counts = Arc::new(WatchCounts::new(2));
        let alice = UserInfo::new("alice", &[]);
        let a1 = counts.open(&alice).unwrap();
        let _a2 = counts.open(&alice).unwrap();
        assert_eq!(counts.open(&alice).err().unwrap().code, 429);
        let _b = counts.open(&UserInfo::new("bob", &[])).unwrap();
        assert_eq!(counts.total(), 3);
        drop(a1);
        let _a3 = counts.open(&alice).unwrap();
    }

    #[test]
    fn long_running_requests_are_those_upstream_names() {
        let mut a = attrs("u", &[], "", "pods");
        a.verb = "get".into();
        assert!(!long_running(&a));
        for sub in ["exec", "attach", "portforward", "log", "proxy"] {
            a.subresource = sub.into();
            assert!(long_running(&a), "{sub}");
        }
        a.subresource = "status".into();
        a.verb = "watch".into();
        assert!(long_running(&a));
    }
}
