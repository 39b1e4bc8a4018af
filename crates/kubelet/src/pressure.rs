//! Node resource pressure (↔ the eviction manager's signals and thresholds
//! in pkg/kubelet/eviction, and its node conditions): every 10 s the
//! node's memory, filesystems and PIDs are measured through [`Measure`]
//! and compared with the kubelet's default hard eviction thresholds:
//!
//! - `memory.available < 100Mi` → MemoryPressure (MemAvailable of
//!   /proc/meminfo; upstream subtracts the root cgroup's working set from
//!   the capacity instead);
//! - `nodefs.available < 10%`, `nodefs.inodesFree < 5%` (the filesystem of
//!   the agent's data directory) and `imagefs.available < 15%` (the
//!   container runtime's root; the same filesystem as nodefs unless the
//!   runtime keeps its images elsewhere, in which case 15% decides, as it
//!   does upstream) → DiskPressure;
//! - `pid.available < 5%` of the node's task limit (the smaller of
//!   kernel.pid_max and kernel.threads-max, less the tasks counted in
//!   /proc/loadavg, as the kubelet's pidlimit stats) → PIDPressure. The
//!   kubelet has no default PID threshold; 5% is skiff's.
//!
//! A pressure condition stays True for the pressure transition period
//! (evictionPressureTransitionPeriod, 5 min) after the signal last crossed
//! its threshold, so that it does not flap. The conditions (and, through
//! the node lifecycle controller, the `node.kubernetes.io/*-pressure`
//! NoSchedule taints) follow; [`crate::eviction`] evicts pods while a
//! threshold is crossed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the signals are measured (the eviction manager's monitoring
/// interval, housekeeping's 10 s).
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(10);
/// How long a condition stays True after its signal was last under its
/// threshold (the kubelet's evictionPressureTransitionPeriod).
pub const PRESSURE_TRANSITION_PERIOD: Duration = Duration::from_secs(300);

/// A filesystem's size and what is left of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    pub capacity_bytes: u64,
    /// Available to unprivileged users (statvfs f_bavail).
    pub available_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// What was measured; a signal that could not be is None (and never
/// reports pressure).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    /// Bytes.
    pub memory_available: Option<u64>,
    pub nodefs: Option<FsStats>,
    pub imagefs: Option<FsStats>,
    /// The node's task limit and the tasks that exist.
    pub pid_max: Option<u64>,
    pub pids_running: Option<u64>,
}

/// Where the signals come from (the host's /proc and statvfs; a fake in tests).
pub trait Measure: Send + Sync {
    fn observe(&self) -> Observations;
}

/// The kubelet's hard eviction thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// memory.available below this many bytes.
    pub memory_available_bytes: u64,
    /// nodefs.available below this percentage of its capacity.
    pub nodefs_available_percent: u64,
    /// nodefs.inodesFree below this percentage of its inodes.
    pub nodefs_inodes_free_percent: u64,
    /// imagefs.available below this percentage of its capacity.
    pub imagefs_available_percent: u64,
    /// pid.available below this percentage of the task limit.
    pub pid_available_percent: u64,
}

impl Thresholds {
    /// The kubelet's `--eviction-hard`: `signal<value` pairs separated by
    /// commas, a value a quantity (memory.available) or a percentage
    /// (`nodefs.available<10%`); signals not named keep their defaults.
    /// `0%` (or `0`) turns a signal off, as kind's clusters do for disks.
    pub fn parse(s: &str) -> Result<Thresholds, String> {
        let mut t = Thresholds::default();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (signal, value) = pair
                .split_once('<')
                .ok_or_else(|| format!("{pair}: not signal<value"))?;
            let (signal, value) = (signal.trim(), value.trim());
            let percent = || -> Result<u64, String> {
                let v = value.strip_suffix('%').unwrap_or(value);
                v.parse::<u64>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| format!("{pair}: not a percentage from 0% to 100%"))
            };
            match signal {
                "memory.available" => {
                    t.memory_available_bytes = if value == "0" || value == "0%" {
                        0
                    } else {
                        crate::env::parse_bytes(value)
                            .ok_or_else(|| format!("{pair}: not a quantity"))?
                    }
                }
                "nodefs.available" => t.nodefs_available_percent = percent()?,
                "nodefs.inodesFree" => t.nodefs_inodes_free_percent = percent()?,
                "imagefs.available" => t.imagefs_available_percent = percent()?,
                "pid.available" => t.pid_available_percent = percent()?,
                other => return Err(format!("{other}: not an eviction signal skiff knows")),
            }
        }
        Ok(t)
    }
}

impl Default for Thresholds {
    /// memory.available<100Mi, nodefs.available<10%, nodefs.inodesFree<5%,
    /// imagefs.available<15% (the kubelet's defaults), pid.available<5%
    /// (skiff's; the kubelet has none).
    fn default() -> Thresholds {
        Thresholds {
            memory_available_bytes: 100 * 1024 * 1024,
            nodefs_available_percent: 10,
            nodefs_inodes_free_percent: 5,
            imagefs_available_percent: 15,
            pid_available_percent: 5,
        }
    }
}

/// Which conditions are True.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

/// Whether `available` is below `percent` of `total` (never with a total of 0).
fn below_percent(available: u64, total: u64, percent: u64) -> bool {
    if total == 0 {
        return false;
    }
    // available / total < percent / 100, without division or overflow.
    u128::from(available)
        .checked_mul(100)
        .zip(u128::from(total).checked_mul(u128::from(percent)))
        .is_some_and(|(a, t)| a < t)
}

/// An eviction signal (↔ evictionapi.Signal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    PidAvailable,
}

impl Signal {
    /// The signal's name in `--eviction-hard`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::ImagefsAvailable => "imagefs.available",
            Signal::PidAvailable => "pid.available",
        }
    }
}

/// A threshold the observations crossed: the signal, the threshold as a
/// quantity (a percentage applied to the capacity) and what was available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crossed {
    pub signal: Signal,
    pub threshold: u64,
    pub available: u64,
}

/// `percent` of `total`, rounded down (↔ GetThresholdQuantity).
fn percent_of(total: u64, percent: u64) -> u64 {
    let q = u128::from(total).saturating_mul(u128::from(percent)) / 100;
    u64::try_from(q).unwrap_or(u64::MAX)
}

/// The thresholds crossed by these observations, in the order the
/// eviction manager reclaims them: memory first (↔ byEvictionPriority),
/// then nodefs, imagefs and PIDs.
pub fn crossed(t: &Thresholds, o: &Observations) -> Vec<Crossed> {
    let mut out = Vec::new();
    if let Some(m) = o.memory_available
        && m < t.memory_available_bytes
    {
        out.push(Crossed {
            signal: Signal::MemoryAvailable,
            threshold: t.memory_available_bytes,
            available: m,
        });
    }
    if let Some(f) = o.nodefs {
        if below_percent(
            f.available_bytes,
            f.capacity_bytes,
            t.nodefs_available_percent,
        ) {
            out.push(Crossed {
                signal: Signal::NodefsAvailable,
                threshold: percent_of(f.capacity_bytes, t.nodefs_available_percent),
                available: f.available_bytes,
            });
        }
        if below_percent(f.inodes_free, f.inodes, t.nodefs_inodes_free_percent) {
            out.push(Crossed {
                signal: Signal::NodefsInodesFree,
                threshold: percent_of(f.inodes, t.nodefs_inodes_free_percent),
                available: f.inodes_free,
            });
        }
    }
    if let Some(f) = o.imagefs
        && below_percent(
            f.available_bytes,
            f.capacity_bytes,
            t.imagefs_available_percent,
        )
    {
        out.push(Crossed {
            signal: Signal::ImagefsAvailable,
            threshold: percent_of(f.capacity_bytes, t.imagefs_available_percent),
            available: f.available_bytes,
        });
    }
    if let (Some(max), Some(running)) = (o.pid_max, o.pids_running) {
        let available = max.saturating_sub(running);
        if below_percent(available, max, t.pid_available_percent) {
            out.push(Crossed {
                signal: Signal::PidAvailable,
                threshold: percent_of(max, t.pid_available_percent),
                available,
            });
        }
    }
    out
}

impl Pressure {
    /// The conditions these crossed thresholds make.
    pub fn of(crossed: &[Crossed]) -> Pressure {
        let any = |f: fn(Signal) -> bool| crossed.iter().any(|c| f(c.signal));
        Pressure {
            memory: any(|s| s == Signal::MemoryAvailable),
            disk: any(|s| {
                matches!(
                    s,
                    Signal::NodefsAvailable | Signal::NodefsInodesFree | Signal::ImagefsAvailable
                )
            }),
            pid: any(|s| s == Signal::PidAvailable),
        }
    }
}

/// The conditions these observations make.
pub fn evaluate(t: &Thresholds, o: &Observations) -> Pressure {
    Pressure::of(&crossed(t, o))
}

/// Keeps a condition True for the transition period after its signal was
/// last seen under its threshold.
#[derive(Debug, Default)]
pub struct Tracker {
    /// When each signal was last under its threshold.
    memory: Option<tokio::time::Instant>,
    disk: Option<tokio::time::Instant>,
    pid: Option<tokio::time::Instant>,
}

impl Tracker {
    /// The conditions to report after observing `observed` at `now`.
    pub fn update(&mut self, observed: Pressure, now: tokio::time::Instant) -> Pressure {
        let one = |seen: bool, last: &mut Option<tokio::time::Instant>| {
            if seen {
                *last = Some(now);
            }
            last.is_some_and(|l| now.saturating_duration_since(l) < PRESSURE_TRANSITION_PERIOD)
        };
        Pressure {
            memory: one(observed.memory, &mut self.memory),
            disk: one(observed.disk, &mut self.disk),
            pid: one(observed.pid, &mut self.pid),
        }
    }
}

/// Measures the node and publishes its conditions, one pass at a time.
pub struct Monitor {
    measure: Arc<dyn Measure>,
    thresholds: Thresholds,
    tracker: Tracker,
    tx: tokio::sync::watch::Sender<Pressure>,
}

impl Monitor {
    pub fn new(
        measure: Arc<dyn Measure>,
        thresholds: Thresholds,
        tx: tokio::sync::watch::Sender<Pressure>,
    ) -> Monitor {
        Monitor {
            measure,
            thresholds,
            tracker: Tracker::default(),
            tx,
        }
    }

    /// Measure at `now` and publish the conditions on the channel (its
    /// receivers are woken only when they change). The thresholds crossed
    /// now, with what was measured; None when measuring failed.
    pub async fn pass(
        &mut self,
        now: tokio::time::Instant,
    ) -> Option<(Vec<Crossed>, Observations, Pressure)> {
        let m = self.measure.clone();
        let observed = match tokio::task::spawn_blocking(move || m.observe()).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "measuring the node's resources failed");
                return None;
            }
        };
        let crossed = crossed(&self.thresholds, &observed);
        let pressure = self.tracker.update(Pressure::of(&crossed), now);
        self.tx.send_if_modified(|current| {
            if *current == pressure {
                return false;
            }
            tracing::info!(
                memory = pressure.memory,
                disk = pressure.disk,
                pid = pressure.pid,
                ?observed,
                "node pressure changed"
            );
            *current = pressure;
            true
        });
        Some((crossed, observed, pressure))
    }
}

/// The host: /proc and statvfs.
#[derive(Clone, Debug)]
pub struct HostMeasure {
    /// Usually /proc.
    pub proc_root: PathBuf,
    /// A directory on the node filesystem (the agent's data directory).
    pub nodefs: PathBuf,
    /// A directory on the image filesystem (the runtime's root).
    pub imagefs: PathBuf,
}

impl HostMeasure {
    pub fn new(nodefs: impl Into<PathBuf>, imagefs: impl Into<PathBuf>) -> HostMeasure {
        HostMeasure {
            proc_root: PathBuf::from("/proc"),
            nodefs: nodefs.into(),
            imagefs: imagefs.into(),
        }
    }

    fn read(&self, rel: &str) -> Option<String> {
        let path = self.proc_root.join(rel);
        match std::fs::read_to_string(&path) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "reading a resource signal failed");
                None
            }
        }
    }
}

/// A filesystem's statvfs figures, from the nearest existing ancestor of
/// `path` (the directory may not exist yet).
pub fn statvfs(path: &Path) -> Option<FsStats> {
    let existing = path.ancestors().find(|p| p.exists())?;
    match rustix::fs::statvfs(existing) {
        Ok(s) => Some(FsStats {
            capacity_bytes: s.f_blocks.saturating_mul(s.f_frsize),
            available_bytes: s.f_bavail.saturating_mul(s.f_frsize),
            inodes: s.f_files,
            inodes_free: s.f_ffree,
        }),
        Err(e) => {
            tracing::debug!(path = %existing.display(), error = %e, "statvfs failed");
            None
        }
    }
}

impl Measure for HostMeasure {
    fn observe(&self) -> Observations {
        let pid_max = [
            self.read("sys/kernel/pid_max"),
            self.read("sys/kernel/threads-max"),
        ]
        .into_iter()
        .flatten()
        .filter_map(|s| s.trim().parse::<u64>().ok())
        .min();
        Observations {
            memory_available: self.read("meminfo").and_then(|t| parse_mem_available(&t)),
            nodefs: statvfs(&self.nodefs),
            imagefs: statvfs(&self.imagefs),
            pid_max,
            pids_running: self.read("loadavg").and_then(|t| parse_loadavg_tasks(&t)),
        }
    }
}

/// MemAvailable from /proc/meminfo text, in bytes.
pub fn parse_mem_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// The number of tasks from /proc/loadavg text (`0.00 0.01 0.05 1/123
/// 4567`: the denominator of the fourth field).
pub fn parse_loadavg_tasks(text: &str) -> Option<u64> {
    let field = text.split_whitespace().nth(3)?;
    field.split_once('/')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1024 * 1024;

    fn fs(capacity: u64, available: u64, inodes: u64, free: u64) -> FsStats {
        FsStats {
            capacity_bytes: capacity,
            available_bytes: available,
            inodes,
            inodes_free: free,
        }
    }

    /// Plenty of everything.
    fn healthy() -> Observations {
        Observations {
            memory_available: Some(4096 * MI),
            nodefs: Some(fs(1000, 500, 1000, 500)),
            imagefs: Some(fs(1000, 500, 1000, 500)),
            pid_max: Some(4_194_304),
            pids_running: Some(300),
        }
    }

    #[test]
    fn thresholds_are_the_kubelets_defaults() {
        let t = Thresholds::default();
        assert_eq!(t.memory_available_bytes, 100 * MI);
        assert_eq!(t.nodefs_available_percent, 10);
        assert_eq!(t.nodefs_inodes_free_percent, 5);
        assert_eq!(t.imagefs_available_percent, 15);
        assert_eq!(t.pid_available_percent, 5);
    }

    #[test]
    fn evaluates_each_signal_against_its_threshold() {
        let t = Thresholds::default();
        let none = Pressure::default();
        let memory = Pressure {
            memory: true,
            ..none
        };
        let disk = Pressure { disk: true, ..none };
        let pid = Pressure { pid: true, ..none };
        let cases: Vec<(&str, Observations, Pressure)> = vec![
            ("healthy", healthy(), none),
            ("nothing measured", Observations::default(), none),
            (
                "memory just at 100Mi",
                Observations {
                    memory_available: Some(100 * MI),
                    ..healthy()
                },
                none,
            ),
            (
                "memory under 100Mi",
                Observations {
                    memory_available: Some(100 * MI - 1),
                    ..healthy()
                },
                memory,
            ),
            (
                "nodefs at 10%",
                Observations {
                    nodefs: Some(fs(1000, 100, 1000, 500)),
                    ..healthy()
                },
                none,
            ),
            (
                "nodefs under 10%",
                Observations {
                    nodefs: Some(fs(1000, 99, 1000, 500)),
                    ..healthy()
                },
                disk,
            ),
            (
                "nodefs inodes at 5%",
                Observations {
                    nodefs: Some(fs(1000, 500, 1000, 50)),
                    ..healthy()
                },
                none,
            ),
            (
                "nodefs inodes under 5%",
                Observations {
                    nodefs: Some(fs(1000, 500, 1000, 49)),
                    ..healthy()
                },
                disk,
            ),
            (
                "nodefs without inodes (btrfs)",
                Observations {
                    nodefs: Some(fs(1000, 500, 0, 0)),
                    ..healthy()
                },
                none,
            ),
            (
                "imagefs at 15%",
                Observations {
                    imagefs: Some(fs(1000, 150, 1000, 500)),
                    ..healthy()
                },
                none,
            ),
            (
                "imagefs under 15%",
                Observations {
                    imagefs: Some(fs(1000, 149, 1000, 500)),
                    ..healthy()
                },
                disk,
            ),
            (
                "pids at 5% free",
                Observations {
                    pid_max: Some(1000),
                    pids_running: Some(950),
                    ..healthy()
                },
                none,
            ),
            (
                "pids under 5% free",
                Observations {
                    pid_max: Some(1000),
                    pids_running: Some(951),
                    ..healthy()
                },
                pid,
            ),
            (
                "more tasks than the limit",
                Observations {
                    pid_max: Some(1000),
                    pids_running: Some(2000),
                    ..healthy()
                },
                pid,
            ),
            (
                "huge filesystems do not overflow",
                Observations {
                    nodefs: Some(fs(u64::MAX, u64::MAX / 20, u64::MAX, u64::MAX)),
                    ..healthy()
                },
                disk,
            ),
        ];
        for (name, o, want) in cases {
            assert_eq!(evaluate(&t, &o), want, "{name}");
        }
    }

    #[test]
    fn crossed_thresholds_carry_their_quantities_memory_first() {
        let t = Thresholds::default();
        let o = Observations {
            memory_available: Some(52 * MI),
            nodefs: Some(fs(1000, 99, 1000, 10)),
            imagefs: Some(fs(2000, 100, 1000, 500)),
            pid_max: Some(1000),
            pids_running: Some(990),
        };
        let c = |signal, threshold, available| Crossed {
            signal,
            threshold,
            available,
        };
        assert_eq!(
            crossed(&t, &o),
            [
                c(Signal::MemoryAvailable, 100 * MI, 52 * MI),
                c(Signal::NodefsAvailable, 100, 99),
                c(Signal::NodefsInodesFree, 50, 10),
                c(Signal::ImagefsAvailable, 300, 100),
                c(Signal::PidAvailable, 50, 10),
            ]
        );
        assert!(crossed(&t, &healthy()).is_empty());
    }

    #[test]
    fn parses_proc_files() {
        let meminfo =
            "MemTotal:       24683656 kB\nMemFree:         1000 kB\nMemAvailable:   12345678 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(12_345_678 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(
            parse_loadavg_tasks("0.00 0.01 0.05 1/123 4567\n"),
            Some(123)
        );
        assert_eq!(parse_loadavg_tasks("0.00 0.01"), None);
        assert_eq!(parse_loadavg_tasks("0.00 0.01 0.05 123 4567"), None);
    }

    #[test]
    fn host_measure_reads_proc_and_statvfs() {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        std::fs::create_dir_all(proc_root.join("sys/kernel")).unwrap();
        std::fs::write(proc_root.join("meminfo"), "MemAvailable: 2048 kB\n").unwrap();
        std::fs::write(proc_root.join("sys/kernel/pid_max"), "4194304\n").unwrap();
        std::fs::write(proc_root.join("sys/kernel/threads-max"), "1000\n").unwrap();
        std::fs::write(proc_root.join("loadavg"), "0.1 0.2 0.3 2/77 999\n").unwrap();
        let m = HostMeasure {
            proc_root,
            // Not created yet: its nearest existing ancestor is measured.
            nodefs: dir.path().join("data/agent"),
            imagefs: dir.path().to_path_buf(),
        };
        let o = m.observe();
        assert_eq!(o.memory_available, Some(2048 * 1024));
        assert_eq!(o.pid_max, Some(1000));
        assert_eq!(o.pids_running, Some(77));
        let nodefs = o.nodefs.unwrap();
        assert!(nodefs.capacity_bytes > 0);
        assert!(nodefs.available_bytes <= nodefs.capacity_bytes);
        assert_eq!(o.imagefs, o.nodefs);
        // Without /proc files those signals are unknown.
        let m = HostMeasure {
            proc_root: dir.path().join("missing"),
            ..m
        };
        let o = m.observe();
        assert_eq!(o.memory_available, None);
        assert_eq!(o.pid_max, None);
        assert_eq!(o.pids_running, None);
    }

    #[test]
    fn conditions_stay_for_the_transition_period() {
        let start = tokio::time::Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut t = Tracker::default();
        let none = Pressure::default();
        let memory = Pressure {
            memory: true,
            ..none
        };
        assert_eq!(t.update(none, at(0)), none);
        assert_eq!(t.update(memory, at(10)), memory);
        // Gone, but not for 5 minutes yet.
        assert_eq!(t.update(none, at(20)), memory);
        assert_eq!(t.update(none, at(309)), memory);
        assert_eq!(t.update(none, at(310)), none);
        // Seen again: the period starts over.
        assert_eq!(t.update(memory, at(320)), memory);
        assert_eq!(t.update(none, at(600)), memory);
        assert_eq!(t.update(none, at(620)), none);
    }

    #[test]
    fn eviction_hard_is_read_as_the_kubelet_flag() {
        let t = Thresholds::parse("memory.available<1Gi, nodefs.available<0%,imagefs.available<0%")
            .unwrap();
        assert_eq!(t.memory_available_bytes, 1024 * 1024 * 1024);
        assert_eq!(
            (t.nodefs_available_percent, t.imagefs_available_percent),
            (0, 0)
        );
        // Signals not named keep their defaults.
        assert_eq!(
            t.nodefs_inodes_free_percent,
            Thresholds::default().nodefs_inodes_free_percent
        );
        assert!(Thresholds::parse("nodefs.available<101%").is_err());
        assert!(Thresholds::parse("disk<5%").is_err());
        assert!(Thresholds::parse("memory.available=1Gi").is_err());
    }
}
