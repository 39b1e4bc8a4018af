//! Pod Security Admission (k8s.io/pod-security-admission): the
//! `pod-security.kubernetes.io/{enforce,audit,warn}[-version]` labels of a
//! namespace pick a level (privileged, baseline, restricted) per mode, and
//! pods are checked against the Pod Security Standards as the upstream
//! `policy/` package checks them for `latest` (any version label is
//! evaluated as latest, and shown as given). Enforce refuses a pod with 403;
//! warn answers `Warning` headers, for pods and for the pod templates of
//! workload resources; audit is logged. Namespaces with invalid labels are
//! refused with 422, and raising a namespace's enforce level warns about its
//! existing pods. Nothing is exempt; labels a namespace does not set come
//! from the cluster default (`--pod-security-default`, privileged unless
//! set), as upstream's AdmissionConfiguration defaults.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use skiff_api::validation::FieldError;

use crate::handlers::{Req, name_of};
use crate::status::{ApiError, ApiResult, Cause};

pub const ENFORCE_LEVEL_LABEL: &str = "pod-security.kubernetes.io/enforce";
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";
pub const AUDIT_LEVEL_LABEL: &str = "pod-security.kubernetes.io/audit";
pub const AUDIT_VERSION_LABEL: &str = "pod-security.kubernetes.io/audit-version";
pub const WARN_LEVEL_LABEL: &str = "pod-security.kubernetes.io/warn";
pub const WARN_VERSION_LABEL: &str = "pod-security.kubernetes.io/warn-version";

/// A Pod Security Standards level, least strict first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    #[default]
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }

    /// upstream api.ParseLevel: an unknown value is an error, and is
    /// evaluated as restricted.
    pub fn parse(s: &str) -> Result<Level, String> {
        match s {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            _ => Err("must be one of privileged, baseline, restricted".to_string()),
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        Level::parse(s)
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level and the policy version it was asked at ("latest" or "v1.x").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelVersion {
    pub level: Level,
    pub version: String,
}

impl LevelVersion {
    fn latest(level: Level) -> LevelVersion {
        LevelVersion {
            level,
            version: "latest".into(),
        }
    }
}

impl std::fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.level, self.version)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub enforce: LevelVersion,
    pub audit: LevelVersion,
    pub warn: LevelVersion,
}

impl Policy {
    pub fn uniform(level: Level) -> Policy {
        Policy {
            enforce: LevelVersion::latest(level),
            audit: LevelVersion::latest(level),
            warn: LevelVersion::latest(level),
        }
    }

    fn fully_privileged(&self) -> bool {
        [&self.enforce, &self.audit, &self.warn]
            .iter()
            .all(|lv| lv.level == Level::Privileged)
    }
}

/// upstream api.ParseVersion: "latest" or "v1.x".
fn parse_version(v: &str) -> Result<String, String> {
    let valid = v == "latest"
        || v.strip_prefix("v1.").is_some_and(|minor| {
            !minor.is_empty()
                && minor.bytes().all(|b| b.is_ascii_digit())
                && (minor == "0" || !minor.starts_with('0'))
                && minor.parse::<u32>().is_ok()
        });
    if valid {
        Ok(v.to_string())
    } else {
        Err("must be \"latest\" or \"v1.x\"".to_string())
    }
}

/// upstream api.PolicyToEvaluate: the namespace's labels over the default
/// policy; invalid values are reported, and evaluated as restricted (enforce)
/// or privileged (audit, warn: fail open), at latest.
pub fn policy_to_evaluate(labels: Option<&Value>, default: Level) -> (Policy, Vec<FieldError>) {
    let mut p = Policy::uniform(default);
    let mut errs = Vec::new();
    let Some(labels) = labels.and_then(Value::as_object) else {
        return (p, errs);
    };
    let mut level = |label: &str, target: &mut LevelVersion, fail: Level| {
        if let Some(v) = labels.get(label) {
            let s = v.as_str().unwrap_or_default();
            match Level::parse(s) {
                Ok(l) => target.level = l,
                Err(e) => {
                    target.level = fail;
                    errs.push(label_error(label, s, &e));
                }
            }
        }
    };
    level(ENFORCE_LEVEL_LABEL, &mut p.enforce, Level::Restricted);
    level(AUDIT_LEVEL_LABEL, &mut p.audit, Level::Privileged);
    level(WARN_LEVEL_LABEL, &mut p.warn, Level::Privileged);
    for (label, target) in [
        (ENFORCE_VERSION_LABEL, &mut p.enforce),
        (AUDIT_VERSION_LABEL, &mut p.audit),
        (WARN_VERSION_LABEL, &mut p.warn),
    ] {
        if let Some(v) = labels.get(label) {
            let s = v.as_str().unwrap_or_default();
            match parse_version(s) {
                Ok(v) => target.version = v,
                Err(e) => {
                    target.version = "latest".into();
                    errs.push(label_error(label, s, &e));
                }
            }
        }
    }
    // Upstream reports the errors in label order: enforce, enforce-version, audit, ...
    let order = [
        ENFORCE_LEVEL_LABEL,
        ENFORCE_VERSION_LABEL,
        AUDIT_LEVEL_LABEL,
        AUDIT_VERSION_LABEL,
        WARN_LEVEL_LABEL,
        WARN_VERSION_LABEL,
    ];
    errs.sort_by_key(|e: &FieldError| {
        order
            .iter()
            .position(|l| e.field == format!("metadata.labels[{l}]"))
            .unwrap_or(order.len())
    });
    (p, errs)
}

fn label_error(label: &str, value: &str, detail: &str) -> FieldError {
    FieldError::invalid(
        format!("metadata.labels[{label}]"),
        &Value::String(value.to_string()),
        detail,
    )
}

/// One failed check: upstream's ForbiddenReason and ForbiddenDetail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub reason: String,
    pub detail: String,
}

fn violation(reason: impl Into<String>, detail: impl Into<String>) -> Option<Violation> {
    Some(Violation {
        reason: reason.into(),
        detail: detail.into(),
    })
}

/// "reason (detail), reason (detail)": AggregateCheckResult.ForbiddenDetail.
pub fn forbidden_detail(vs: &[Violation]) -> String {
    vs.iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// "reason, reason": AggregateCheckResult.ForbiddenReason.
pub fn forbidden_reason(vs: &[Violation]) -> String {
    vs.iter()
        .map(|v| v.reason.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

type Check = fn(&Value, &Value) -> Option<Violation>;

/// The checks of a level, in upstream's evaluation order: the baseline
/// checks (registered in file-name order), then for baseline the checks that
/// restricted replaces, or for restricted the restricted checks.
const BASELINE: &[Check] = &[
    app_armor_profile,
    host_namespaces,
    host_ports,
    host_probes_and_host_lifecycle,
    privileged,
    proc_mount,
    se_linux_options,
    sysctls,
    windows_host_process,
];
const BASELINE_OVERLAP: &[Check] = &[
    capabilities_baseline,
    host_path_volumes,
    seccomp_profile_baseline,
];
const RESTRICTED: &[Check] = &[
    allow_privilege_escalation,
    capabilities_restricted,
    restricted_volumes,
    run_as_non_root,
    run_as_user,
    seccomp_profile_restricted,
];

/// The violations of a pod's metadata and spec at a level (latest version).
pub fn evaluate(level: Level, meta: &Value, spec: &Value) -> Vec<Violation> {
    let extra = match level {
        Level::Privileged => return Vec::new(),
        Level::Baseline => BASELINE_OVERLAP,
        Level::Restricted => RESTRICTED,
    };
    BASELINE
        .iter()
        .chain(extra)
        .filter_map(|check| check(meta, spec))
        .collect()
}

// ---- helpers as upstream's policy/helpers.go ----

fn join_quote(items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    format!("\"{}\"", items.join("\", \""))
}

fn pluralize<'a>(singular: &'a str, plural: &'a str, n: usize) -> &'a str {
    if n == 1 { singular } else { plural }
}

/// Go's %q for the ASCII strings these messages carry.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Init containers, containers, then ephemeral containers (visitContainers).
fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| {
            spec.get(k)
                .and_then(Value::as_array)
                .map(|a| a.as_slice())
                .unwrap_or_default()
        })
}

fn cname(c: &Value) -> String {
    c.get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn csc<'a>(c: &'a Value, field: &str) -> Option<&'a Value> {
    c.get("securityContext")
        .and_then(|sc| sc.get(field))
        .filter(|v| !v.is_null())
}

fn psc<'a>(spec: &'a Value, field: &str) -> Option<&'a Value> {
    csc(spec, field)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// "pod and containers "a", "b"" style setter lists.
fn setters(pod: bool, containers: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if pod {
        out.push("pod".to_string());
    }
    if !containers.is_empty() {
        out.push(format!(
            "{} {}",
            pluralize("container", "containers", containers.len()),
            join_quote(containers)
        ));
    }
    out
}

fn sorted(set: BTreeSet<String>) -> Vec<String> {
    set.into_iter().collect()
}

// ---- baseline ----

fn app_armor_profile(meta: &Value, spec: &Value) -> Option<Violation> {
    let allowed_type = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let type_of = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut bad_values = BTreeSet::new();
    let mut pod = false;
    if let Some(p) = psc(spec, "appArmorProfile")
        && !allowed_type(&type_of(p))
    {
        pod = true;
        bad_values.insert(type_of(p));
    }
    let mut bad = Vec::new();
    for c in containers(spec) {
        if let Some(p) = csc(c, "appArmorProfile")
            && !allowed_type(&type_of(p))
        {
            bad.push(cname(c));
            bad_values.insert(type_of(p));
        }
    }
    let mut who = setters(pod, &bad);
    let mut values = sorted(bad_values);
    let mut annotations: Vec<String> = meta
        .get("annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with("container.apparmor.security.beta.kubernetes.io/"))
                .filter_map(|(k, v)| {
                    let v = v.as_str().unwrap_or_default();
                    let ok = v.is_empty() || v == "runtime/default" || v.starts_with("localhost/");
                    (!ok).then(|| format!("{k}={}", go_quote(v)))
                })
                .collect()
        })
        .unwrap_or_default();
    if !annotations.is_empty() {
        annotations.sort();
        who.push(pluralize("annotation", "annotations", annotations.len()).to_string());
        values.extend(annotations);
    }
    if who.is_empty() {
        return None;
    }
    violation(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            who.join(" and "),
            join_quote(&values)
        ),
    )
}

fn host_namespaces(_: &Value, spec: &Value) -> Option<Violation> {
    let on: Vec<&str> = ["hostIPC", "hostNetwork", "hostPID"]
        .into_iter()
        .filter(|k| spec.get(*k).and_then(Value::as_bool) == Some(true))
        .collect();
    if on.is_empty() {
        return None;
    }
    violation("host namespaces", on.join(", "))
}

fn host_ports(_: &Value, spec: &Value) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut ports = BTreeSet::new();
    for c in containers(spec) {
        let mut valid = true;
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .map(|a| a.as_slice())
            .unwrap_or_default()
        {
            if let Some(hp) = p
                .get("hostPort")
                .and_then(Value::as_i64)
                .filter(|p| *p != 0)
            {
                valid = false;
                ports.insert(hp.to_string());
            }
        }
        if !valid {
            bad.push(cname(c));
        }
    }
    if bad.is_empty() {
        return None;
    }
    let ports = sorted(ports);
    violation(
        "hostPort",
        format!(
            "{} {} {} {} {}",
            pluralize("container", "containers", bad.len()),
            join_quote(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.join(", ")
        ),
    )
}

fn host_probes_and_host_lifecycle(_: &Value, spec: &Value) -> Option<Violation> {
    let mut bad = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    for c in containers(spec) {
        let handlers = ["livenessProbe", "readinessProbe", "startupProbe"]
            .into_iter()
            .filter_map(|p| c.get(p))
            .chain(
                ["postStart", "preStop"]
                    .into_iter()
                    .filter_map(|h| c.get("lifecycle").and_then(|l| l.get(h))),
            );
        for h in handlers {
            for kind in ["httpGet", "tcpSocket"] {
                if let Some(host) = h
                    .get(kind)
                    .and_then(|k| k.get("host"))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    bad.insert(cname(c));
                    hosts.insert(host.to_string());
                }
            }
        }
    }
    if bad.is_empty() {
        return None;
    }
    let (bad, hosts) = (sorted(bad), sorted(hosts));
    violation(
        "probe or lifecycle host",
        format!(
            "{} {} {} {} {}",
            pluralize("container", "containers", bad.len()),
            join_quote(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize(
                "probe or lifecycle host",
                "probe or lifecycle hosts",
                hosts.len()
            ),
            join_quote(&hosts)
        ),
    )
}

fn privileged(_: &Value, spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = containers(spec)
        .filter(|c| csc(c, "privileged").and_then(Value::as_bool) == Some(true))
        .map(cname)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "privileged",
        format!(
            "{} {} must not set securityContext.privileged=true",
            pluralize("container", "containers", bad.len()),
            join_quote(&bad)
        ),
    )
}

fn proc_mount(_: &Value, spec: &Value) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for c in containers(spec) {
        if let Some(t) = csc(c, "procMount").and_then(Value::as_str)
            && t != "Default"
        {
            bad.push(cname(c));
            types.insert(t.to_string());
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "procMount",
        format!(
            "{} {} must not set securityContext.procMount to {}",
            pluralize("container", "containers", bad.len()),
            join_quote(&bad),
            join_quote(&sorted(types))
        ),
    )
}

fn se_linux_options(_: &Value, spec: &Value) -> Option<Violation> {
    let mut bad_types = BTreeSet::new();
    let (mut set_user, mut set_role) = (false, false);
    let mut valid = |o: &Value| {
        let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or_default();
        let mut ok = true;
        let t = s("type");
        if !["", "container_t", "container_init_t", "container_kvm_t"].contains(&t) {
            ok = false;
            bad_types.insert(t.to_string());
        }
        if !s("user").is_empty() {
            ok = false;
            set_user = true;
        }
        if !s("role").is_empty() {
            ok = false;
            set_role = true;
        }
        ok
    };
    let pod = psc(spec, "seLinuxOptions").is_some_and(|o| !valid(o));
    let mut bad = Vec::new();
    for c in containers(spec) {
        if let Some(o) = csc(c, "seLinuxOptions")
            && !valid(o)
        {
            bad.push(cname(c));
        }
    }
    let who = setters(pod, &bad);
    if who.is_empty() {
        return None;
    }
    // As upstream: user and role are only named along with a bad type.
    let mut data = Vec::new();
    if !bad_types.is_empty() {
        let types = sorted(bad_types);
        data.push(format!(
            "{} {}",
            pluralize("type", "types", types.len()),
            join_quote(&types)
        ));
        if set_user {
            data.push("user may not be set".to_string());
        }
        if set_role {
            data.push("role may not be set".to_string());
        }
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            who.join(" and "),
            data.join("; ")
        ),
    )
}

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

fn sysctls(_: &Value, spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = psc(spec, "sysctls")
        .and_then(Value::as_array)
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            s.get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        })
        .filter(|n| !SAFE_SYSCTLS.contains(&n.as_str()))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation("forbidden sysctls", bad.join(", "))
}

fn windows_host_process(_: &Value, spec: &Value) -> Option<Violation> {
    let host_process = |sc: Option<&Value>| {
        sc.and_then(|w| w.get("hostProcess"))
            .and_then(Value::as_bool)
            == Some(true)
    };
    let bad: Vec<String> = containers(spec)
        .filter(|c| host_process(csc(c, "windowsOptions")))
        .map(cname)
        .collect();
    let who = setters(host_process(psc(spec, "windowsOptions")), &bad);
    if who.is_empty() {
        return None;
    }
    violation(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            who.join(" and ")
        ),
    )
}

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn capabilities_baseline(_: &Value, spec: &Value) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut caps = BTreeSet::new();
    for c in containers(spec) {
        let add = strings(csc(c, "capabilities").and_then(|k| k.get("add")));
        let mut valid = true;
        for a in add {
            if !BASELINE_CAPABILITIES.contains(&a.as_str()) {
                valid = false;
                caps.insert(a);
            }
        }
        if !valid {
            bad.push(cname(c));
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "non-default capabilities",
        format!(
            "{} {} must not include {} in securityContext.capabilities.add",
            pluralize("container", "containers", bad.len()),
            join_quote(&bad),
            join_quote(&sorted(caps))
        ),
    )
}

fn volumes(spec: &Value) -> &[Value] {
    spec.get("volumes")
        .and_then(Value::as_array)
        .map(|a| a.as_slice())
        .unwrap_or_default()
}

fn host_path_volumes(_: &Value, spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = volumes(spec)
        .iter()
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .map(cname)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "hostPath volumes",
        format!(
            "{} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad)
        ),
    )
}

fn seccomp_type(p: &Value) -> String {
    p.get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn valid_seccomp(t: &str) -> bool {
    t == "RuntimeDefault" || t == "Localhost"
}

/// Both seccomp checks: explicit bad values, and (restricted) containers
/// that neither set a valid profile nor inherit one from the pod.
fn seccomp(spec: &Value, required: bool) -> Option<Violation> {
    let mut bad_values = BTreeSet::new();
    let mut pod_bad = false;
    let mut pod_set = false;
    if let Some(p) = psc(spec, "seccompProfile") {
        if valid_seccomp(&seccomp_type(p)) {
            pod_set = true;
        } else {
            pod_bad = true;
            bad_values.insert(seccomp_type(p));
        }
    }
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in containers(spec) {
        match csc(c, "seccompProfile") {
            Some(p) if !valid_seccomp(&seccomp_type(p)) => {
                explicit.push(cname(c));
                bad_values.insert(seccomp_type(p));
            }
            Some(_) => {}
            None if !pod_set => implicit.push(cname(c)),
            None => {}
        }
    }
    let who = setters(pod_bad, &explicit);
    if !who.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                who.join(" and "),
                join_quote(&sorted(bad_values))
            ),
        );
    }
    if required && !implicit.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "pod or {} {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                pluralize("container", "containers", implicit.len()),
                join_quote(&implicit)
            ),
        );
    }
    None
}

fn seccomp_profile_baseline(_: &Value, spec: &Value) -> Option<Violation> {
    seccomp(spec, false)
}

// ---- restricted ----

fn allow_privilege_escalation(_: &Value, spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = containers(spec)
        .filter(|c| csc(c, "allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false))
        .map(cname)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!(
            "{} {} must set securityContext.allowPrivilegeEscalation=false",
            pluralize("container", "containers", bad.len()),
            join_quote(&bad)
        ),
    )
}

fn capabilities_restricted(_: &Value, spec: &Value) -> Option<Violation> {
    let (mut missing_drop, mut adding) = (Vec::new(), Vec::new());
    let mut forbidden = BTreeSet::new();
    for c in containers(spec) {
        let Some(caps) = csc(c, "capabilities") else {
            missing_drop.push(cname(c));
            continue;
        };
        if !strings(caps.get("drop")).iter().any(|d| d == "ALL") {
            missing_drop.push(cname(c));
        }
        let mut added_forbidden = false;
        for a in strings(caps.get("add")) {
            if a != "NET_BIND_SERVICE" {
                added_forbidden = true;
                forbidden.insert(a);
            }
        }
        if added_forbidden {
            adding.push(cname(c));
        }
    }
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} {} must set securityContext.capabilities.drop=[\"ALL\"]",
            pluralize("container", "containers", missing_drop.len()),
            join_quote(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} {} must not include {} in securityContext.capabilities.add",
            pluralize("container", "containers", adding.len()),
            join_quote(&adding),
            join_quote(&sorted(forbidden))
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("unrestricted capabilities", details.join("; "))
}

const RESTRICTED_ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

const RESTRICTED_VOLUME_TYPES: &[&str] = &[
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "portworxVolume",
    "photonPersistentDisk",
    "scaleIO",
    "storageos",
    "hostPath",
];

fn restricted_volumes(_: &Value, spec: &Value) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for v in volumes(spec) {
        let set = |k: &&str| v.get(*k).is_some_and(|s| !s.is_null());
        if RESTRICTED_ALLOWED_VOLUMES.iter().any(set) {
            continue;
        }
        bad.push(cname(v));
        let t = RESTRICTED_VOLUME_TYPES
            .iter()
            .find(|k| set(k))
            .copied()
            .unwrap_or("unknown");
        types.insert(t.to_string());
    }
    if bad.is_empty() {
        return None;
    }
    let types = sorted(types);
    violation(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                types.len()
            ),
            join_quote(&types)
        ),
    )
}

fn run_as_non_root(_: &Value, spec: &Value) -> Option<Violation> {
    let pod = psc(spec, "runAsNonRoot").and_then(Value::as_bool);
    let pod_non_root = pod == Some(true);
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in containers(spec) {
        match csc(c, "runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => explicit.push(cname(c)),
            Some(true) => {}
            None if !pod_non_root => implicit.push(cname(c)),
            None => {}
        }
    }
    let who = setters(pod == Some(false), &explicit);
    if !who.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                who.join(" and ")
            ),
        );
    }
    if !implicit.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "pod or {} {} must set securityContext.runAsNonRoot=true",
                pluralize("container", "containers", implicit.len()),
                join_quote(&implicit)
            ),
        );
    }
    None
}

fn run_as_user(_: &Value, spec: &Value) -> Option<Violation> {
    let zero = |v: Option<&Value>| v.and_then(Value::as_i64) == Some(0);
    let bad: Vec<String> = containers(spec)
        .filter(|c| zero(csc(c, "runAsUser")))
        .map(cname)
        .collect();
    let who = setters(zero(psc(spec, "runAsUser")), &bad);
    if who.is_empty() {
        return None;
    }
    violation(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", who.join(" and ")),
    )
}

fn seccomp_profile_restricted(_: &Value, spec: &Value) -> Option<Violation> {
    seccomp(spec, true)
}

// ---- admission ----

/// The pod template (metadata, spec) of a workload resource, as upstream's
/// DefaultPodSpecExtractor.
fn pod_template<'a>(group: &str, kind: &str, obj: &'a Value) -> Option<&'a Value> {
    let t = match (group, kind) {
        ("", "PodTemplate") => obj.get("template"),
        ("", "ReplicationController")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job") => obj.pointer("/spec/template"),
        ("batch", "CronJob") => obj.pointer("/spec/jobTemplate/spec/template"),
        _ => None,
    };
    t.filter(|t| !t.is_null())
}

fn meta_spec(v: &Value) -> (Value, Value) {
    (
        v.get("metadata").cloned().unwrap_or(Value::Null),
        v.get("spec").cloned().unwrap_or(Value::Null),
    )
}

/// The namespace's policy, from the cache (as upstream's namespace lister).
fn namespace_policy(req: &Req<'_>) -> Option<(Policy, bool)> {
    let ns = req.namespace.as_deref()?;
    let obj = req
        .server
        .cache
        .get(&format!("/registry/namespaces/{ns}"))?;
    let (p, errs) = policy_to_evaluate(
        obj.value.pointer("/metadata/labels"),
        req.server.pod_security_default,
    );
    Some((p, errs.is_empty()))
}

/// Whether a pod update changes what the policy looks at
/// (upstream isSignificantPodUpdate: container count, an image, an
/// ephemeral container added or changed).
fn significant_pod_update(new: &Value, old: &Value) -> bool {
    let list = |v: &Value, k: &str| -> Vec<Value> {
        v.pointer(&format!("/spec/{k}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let image = |c: &Value| c.get("image").cloned();
    for k in ["containers", "initContainers"] {
        let (n, o) = (list(new, k), list(old, k));
        if n.len() != o.len() || n.iter().zip(&o).any(|(a, b)| image(a) != image(b)) {
            return true;
        }
    }
    let old_eph = list(old, "ephemeralContainers");
    list(new, "ephemeralContainers").iter().any(|c| {
        match old_eph.iter().find(|o| o.get("name") == c.get("name")) {
            None => true,
            Some(o) => image(o) != image(c),
        }
    })
}

/// Validating admission of a pod or namespace write (create: `old` None).
/// Enforce refuses a pod (403), audit logs it, and a namespace with invalid
/// labels is refused (422). Subresources other than ephemeralcontainers are
/// not looked at, as upstream.
pub fn admit(req: &Req<'_>, obj: &Value, old: Option<&Value>, sub: Option<&str>) -> ApiResult<()> {
    match (req.info.group, req.info.kind) {
        ("", "Namespace") if sub.is_none() => admit_namespace(req, obj, old),
        ("", "Pod") if sub.is_none() || sub == Some("ephemeralcontainers") => {
            if let Some(old) = old
                && !significant_pod_update(obj, old)
            {
                return Ok(());
            }
            admit_pod(req, obj)
        }
        _ => Ok(()),
    }
}

fn admit_namespace(req: &Req<'_>, ns: &Value, old: Option<&Value>) -> ApiResult<()> {
    let default = req.server.pod_security_default;
    let (_, errs) = policy_to_evaluate(ns.pointer("/metadata/labels"), default);
    if errs.is_empty() {
        return Ok(());
    }
    // On update, labels that were already invalid in the same way stay allowed.
    if let Some(old) = old {
        let (_, old_errs) = policy_to_evaluate(old.pointer("/metadata/labels"), default);
        if !old_errs.is_empty() && old_errs == errs {
            return Ok(());
        }
    }
    let causes = errs
        .iter()
        .map(|e| Cause {
            reason: e.reason().to_string(),
            message: e.message.clone(),
            field: e.field.clone(),
        })
        .collect();
    Err(ApiError::invalid("", "Namespace", name_of(ns), causes))
}

fn admit_pod(req: &Req<'_>, pod: &Value) -> ApiResult<()> {
    let Some((policy, valid)) = namespace_policy(req) else {
        return Ok(());
    };
    if valid && policy.fully_privileged() {
        return Ok(());
    }
    let (meta, spec) = meta_spec(pod);
    let ns = req.namespace.as_deref().unwrap_or_default();
    let name = name_of(pod);
    let enforced = evaluate(policy.enforce.level, &meta, &spec);
    if policy.audit.level != Level::Privileged {
        let audited = if policy.audit.level == policy.enforce.level {
            enforced.clone()
        } else {
            evaluate(policy.audit.level, &meta, &spec)
        };
        if !audited.is_empty() {
            tracing::info!(
                namespace = ns,
                pod = name,
                "pod-security.kubernetes.io/audit-violations: would violate PodSecurity \"{}\": {}",
                policy.audit,
                forbidden_detail(&audited)
            );
        }
    }
    if !enforced.is_empty() {
        let mut e = ApiError::forbidden(format!(
            "pods \"{name}\" is forbidden: violates PodSecurity \"{}\": {}",
            policy.enforce,
            forbidden_detail(&enforced)
        ));
        e.details = Some((String::new(), "pods".to_string(), name.to_string()));
        return Err(e);
    }
    Ok(())
}

/// The `Warning`s of a write (warn mode): for a pod created or changed
/// significantly, a workload whose pod template is written, or a namespace
/// whose enforce level is raised (its existing pods that would be refused).
/// The previous object is the cache's; a write that changes no spec (a
/// status update) warns about nothing.
pub fn warnings(req: &Req<'_>, obj: &Value) -> Vec<String> {
    let (group, kind) = (req.info.group, req.info.kind);
    if (group, kind) == ("", "Namespace") {
        return namespace_warnings(req, obj);
    }
    let old = req.server.cache.get(&req.key(name_of(obj)));
    let old = old.as_ref().map(|o| &o.value);
    let (meta, spec) = if (group, kind) == ("", "Pod") {
        if let Some(old) = old
            && !significant_pod_update(obj, old)
        {
            return Vec::new();
        }
        meta_spec(obj)
    } else {
        let Some(t) = pod_template(group, kind, obj) else {
            return Vec::new();
        };
        if old.is_some_and(|o| o.get("spec") == obj.get("spec")) {
            return Vec::new();
        }
        meta_spec(t)
    };
    let Some((policy, _)) = namespace_policy(req) else {
        return Vec::new();
    };
    if policy.warn.level == Level::Privileged {
        return Vec::new();
    }
    let found = evaluate(policy.warn.level, &meta, &spec);
    if found.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "would violate PodSecurity \"{}\": {}",
        policy.warn,
        forbidden_detail(&found)
    )]
}

fn namespace_warnings(req: &Req<'_>, ns: &Value) -> Vec<String> {
    let name = name_of(ns);
    let Some(old) = req
        .server
        .cache
        .get(&format!("/registry/namespaces/{name}"))
    else {
        return Vec::new();
    };
    let default = req.server.pod_security_default;
    let (new_p, new_errs) = policy_to_evaluate(ns.pointer("/metadata/labels"), default);
    let (old_p, _) = policy_to_evaluate(old.value.pointer("/metadata/labels"), default);
    if !new_errs.is_empty()
        || new_p.enforce == old_p.enforce
        || new_p.enforce.level == Level::Privileged
        || (new_p.enforce.version == old_p.enforce.version
            && new_p.enforce.level <= old_p.enforce.level)
    {
        return Vec::new();
    }
    let (pods, _, _) = req
        .server
        .cache
        .list(&format!("/registry/pods/{name}/"), None, 0, |_| true);
    let pods: Vec<Value> = pods.iter().map(|p| p.value.clone()).collect();
    existing_pod_warnings(name, &new_p.enforce, &pods)
}

/// upstream EvaluatePodsInNamespace: one warning naming the namespace and
/// level, then one per distinct set of reasons, with the lexically first pod
/// and how many others share it, sorted.
pub fn existing_pod_warnings(
    namespace: &str,
    enforce: &LevelVersion,
    pods: &[Value],
) -> Vec<String> {
    // reasons -> (first pod name, count), in first-seen order
    let mut by_reason: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for pod in pods {
        let (meta, spec) = meta_spec(pod);
        let found = evaluate(enforce.level, &meta, &spec);
        if found.is_empty() {
            continue;
        }
        let pod_name = name_of(pod).to_string();
        let entry = by_reason
            .entry(forbidden_reason(&found))
            .or_insert_with(|| (pod_name.clone(), 0));
        if pod_name < entry.0 {
            entry.0 = pod_name;
        }
        entry.1 += 1;
    }
    if by_reason.is_empty() {
        return Vec::new();
    }
    let mut pod_warnings: Vec<String> = by_reason
        .into_iter()
        .map(|(reason, (first, n))| match n {
            1 => format!("{first}: {reason}"),
            2 => format!("{first} (and 1 other pod): {reason}"),
            n => format!("{first} (and {} other pods): {reason}", n - 1),
        })
        .collect();
    pod_warnings.sort();
    let mut out = vec![format!(
        "existing pods in namespace \"{namespace}\" violate the new PodSecurity enforce level \"{enforce}\""
    )];
    out.extend(pod_warnings);
    out
}

/// Adds the warn-mode warnings of a write to the request (once each, as a
/// retried update decodes again).
pub fn warn(req: &Req<'_>, obj: &Value) {
    for w in warnings(req, obj) {
        req.warn(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detail(level: Level, pod: Value) -> String {
        let (meta, spec) = meta_spec(&pod);
        forbidden_detail(&evaluate(level, &meta, &spec))
    }

    fn c(name: &str, sc: Value) -> Value {
        json!({"name": name, "image": "busybox", "securityContext": sc})
    }

    /// A container that passes restricted.
    fn ok(name: &str) -> Value {
        c(
            name,
            json!({"allowPrivilegeEscalation": false, "runAsNonRoot": true,
                   "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}),
        )
    }

    #[test]
    fn baseline_checks() {
        // (pod, expected ForbiddenDetail at baseline); "" is allowed.
        let table = vec![
            (json!({"spec": {"containers": [ok("a")]}}), ""),
            (
                json!({"spec": {"hostNetwork": true, "hostPID": true, "containers": [ok("a")]}}),
                "host namespaces (hostNetwork, hostPID)",
            ),
            (
                json!({"spec": {"containers": [c("a", json!({"privileged": true})), c("b", json!({"privileged": true}))]}}),
                "privileged (containers \"a\", \"b\" must not set securityContext.privileged=true)",
            ),
            (
                json!({"spec": {"containers": [c("a", json!({"capabilities": {"add": ["NET_RAW", "CHOWN", "SYS_ADMIN"]}}))]}}),
                "non-default capabilities (container \"a\" must not include \"NET_RAW\", \"SYS_ADMIN\" in securityContext.capabilities.add)",
            ),
            (
                json!({"spec": {"containers": [ok("a")], "volumes": [{"name": "root", "hostPath": {"path": "/"}}, {"name": "e", "emptyDir": {}}]}}),
                "hostPath volumes (volume \"root\")",
            ),
            (
                json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 443}]}]}}),
                "hostPort (container \"a\" uses hostPorts 443, 8080)",
            ),
            (
                json!({"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/a": "unconfined"}}, "spec": {"containers": [ok("a")]}}),
                "forbidden AppArmor profile (annotation must not set AppArmor profile type to \"container.apparmor.security.beta.kubernetes.io/a=\"unconfined\"\")",
            ),
            (
                json!({"spec": {"securityContext": {"appArmorProfile": {"type": "Unconfined"}}, "containers": [ok("a")]}}),
                "forbidden AppArmor profile (pod must not set AppArmor profile type to \"Unconfined\")",
            ),
            (
                json!({"spec": {"securityContext": {"seLinuxOptions": {"type": "spc_t", "user": "root"}}, "containers": [ok("a")]}}),
                "seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set)",
            ),
            (
                json!({"spec": {"containers": [c("a", json!({"procMount": "Unmasked"}))]}}),
                "procMount (container \"a\" must not set securityContext.procMount to \"Unmasked\")",
            ),
            (
                json!({"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [{"name": "a"}]}}),
                "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")",
            ),
            (
                json!({"spec": {"securityContext": {"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}, {"name": "kernel.msgmax", "value": "1"}]}, "containers": [{"name": "a"}]}}),
                "forbidden sysctls (kernel.msgmax)",
            ),
            (
                json!({"spec": {"securityContext": {"windowsOptions": {"hostProcess": true}}, "containers": [{"name": "a"}]}}),
                "hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)",
            ),
            (
                json!({"spec": {"containers": [{"name": "a", "livenessProbe": {"httpGet": {"host": "169.254.169.254", "port": 80}}}]}}),
                "probe or lifecycle host (container \"a\" uses probe or lifecycle host \"169.254.169.254\")",
            ),
        ];
        for (pod, want) in table {
            assert_eq!(detail(Level::Baseline, pod.clone()), want, "{pod}");
            assert_eq!(detail(Level::Privileged, pod), "");
        }
    }

    #[test]
    fn restricted_checks() {
        let table = vec![
            (
                json!({"spec": {"containers": [ok("a")], "initContainers": [ok("i")]}}),
                "",
            ),
            (
                json!({"spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
                "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
                 unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
                 runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
                 seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            ),
            (
                // Pod-level settings cover the containers.
                json!({"spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "Localhost"}},
                        "containers": [c("a", json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}))]}}),
                "",
            ),
            (
                json!({"spec": {"securityContext": {"runAsNonRoot": false, "runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [c("a", json!({"allowPrivilegeEscalation": false, "runAsUser": 0, "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}))]}}),
                "unrestricted capabilities (container \"a\" must not include \"CHOWN\" in securityContext.capabilities.add), \
                 runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false), \
                 runAsUser=0 (pod and container \"a\" must not set runAsUser=0)",
            ),
            (
                json!({"spec": {"containers": [ok("a")], "volumes": [
                    {"name": "h", "hostPath": {"path": "/"}}, {"name": "n", "nfs": {"server": "x", "path": "/"}},
                    {"name": "p", "projected": {"sources": []}}, {"name": "s", "secret": {"secretName": "s"}}]}}),
                "restricted volume types (volumes \"h\", \"n\" use restricted volume types \"hostPath\", \"nfs\")",
            ),
            (
                // Baseline's checks stay in restricted.
                json!({"spec": {"hostIPC": true, "containers": [ok("a")]}}),
                "host namespaces (hostIPC)",
            ),
            (
                json!({"spec": {"containers": [ok("a")], "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}}),
                "allowPrivilegeEscalation != false (container \"dbg\" must set securityContext.allowPrivilegeEscalation=false), \
                 unrestricted capabilities (container \"dbg\" must set securityContext.capabilities.drop=[\"ALL\"]), \
                 runAsNonRoot != true (pod or container \"dbg\" must set securityContext.runAsNonRoot=true), \
                 seccompProfile (pod or container \"dbg\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            ),
        ];
        for (pod, want) in table {
            assert_eq!(detail(Level::Restricted, pod.clone()), want, "{pod}");
        }
        // A privileged pod: baseline's reason first, then restricted's.
        let pod = json!({"spec": {"containers": [c("c", json!({"privileged": true}))]}});
        assert!(detail(Level::Restricted, pod).starts_with(
            "privileged (container \"c\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false"
        ));
    }

    #[test]
    fn labels_pick_the_policy() {
        let (p, errs) = policy_to_evaluate(None, Level::Baseline);
        assert_eq!(p, Policy::uniform(Level::Baseline));
        assert!(errs.is_empty());
        let labels = json!({ENFORCE_LEVEL_LABEL: "restricted", ENFORCE_VERSION_LABEL: "v1.24", WARN_LEVEL_LABEL: "baseline"});
        let (p, errs) = policy_to_evaluate(Some(&labels), Level::Privileged);
        assert!(errs.is_empty());
        assert_eq!(p.enforce.to_string(), "restricted:v1.24");
        assert_eq!(p.warn.to_string(), "baseline:latest");
        assert_eq!(p.audit.to_string(), "privileged:latest");
        let labels = json!({ENFORCE_LEVEL_LABEL: "strict", WARN_LEVEL_LABEL: "nope", AUDIT_VERSION_LABEL: "v2.0"});
        let (p, errs) = policy_to_evaluate(Some(&labels), Level::Privileged);
        // Enforce fails closed, warn fails open.
        assert_eq!(p.enforce.level, Level::Restricted);
        assert_eq!(p.warn.level, Level::Privileged);
        let msgs: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert_eq!(
            msgs,
            [
                "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted",
                "metadata.labels[pod-security.kubernetes.io/audit-version]: Invalid value: \"v2.0\": must be \"latest\" or \"v1.x\"",
                "metadata.labels[pod-security.kubernetes.io/warn]: Invalid value: \"nope\": must be one of privileged, baseline, restricted",
            ]
        );
        for good in ["latest", "v1.0", "v1.28"] {
            assert!(parse_version(good).is_ok(), "{good}");
        }
        for bad in ["v1.", "v1.01", "1.28", "v1.x", ""] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn existing_pods_are_grouped_by_reasons() {
        let bad = |name: &str| json!({"metadata": {"name": name}, "spec": {"hostPID": true, "containers": [ok("a")]}});
        let priv_pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [c("a", json!({"privileged": true}))]}});
        let good = json!({"metadata": {"name": "g"}, "spec": {"containers": [ok("a")]}});
        let lv = LevelVersion::latest(Level::Baseline);
        let w = existing_pod_warnings(
            "x",
            &lv,
            &[bad("z"), bad("b"), bad("m"), priv_pod, good.clone()],
        );
        assert_eq!(
            w,
            [
                "existing pods in namespace \"x\" violate the new PodSecurity enforce level \"baseline:latest\"",
                "b (and 2 other pods): host namespaces",
                "p: privileged",
            ]
        );
        assert!(existing_pod_warnings("x", &lv, &[good]).is_empty());
    }

    #[test]
    fn significant_pod_updates() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        let mut labels = pod.clone();
        labels["metadata"] = json!({"labels": {"a": "b"}});
        assert!(!significant_pod_update(&labels, &pod));
        let image = json!({"spec": {"containers": [{"name": "a", "image": "y"}]}});
        assert!(significant_pod_update(&image, &pod));
        let eph = json!({"spec": {"containers": [{"name": "a", "image": "x"}], "ephemeralContainers": [{"name": "d", "image": "x"}]}});
        assert!(significant_pod_update(&eph, &pod));
    }
}
