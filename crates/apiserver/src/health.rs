//! `/livez`, `/readyz` and `/healthz` with named checks, as
//! k8s.io/apiserver/pkg/server/healthz answers them: `ok` when every
//! check passes, `?verbose` lists them (`[+]etcd ok`), a failing one makes
//! the endpoint answer 500 with `[-]etcd failed: reason withheld` (the
//! reason goes to the log), `?exclude=NAME` leaves a check out, and
//! `/readyz/NAME` runs one. Readiness means the store answers within a
//! deadline and the watch cache has caught up with it, so that a server
//! cut off from etcd (no quorum) leaves its load balancer's rotation.

use std::time::Duration;

use crate::state::ApiServer;

/// How long a check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    Ping,
    Etcd,
    InformerSync,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::Ping => "ping",
            Check::Etcd => "etcd",
            Check::InformerSync => "informer-sync",
        }
    }

    async fn run(self, server: &ApiServer) -> Result<(), String> {
        match self {
            Check::Ping => Ok(()),
            Check::Etcd => {
                match tokio::time::timeout(CHECK_TIMEOUT, server.store.current_revision()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
                }
            }
            Check::InformerSync => {
                match tokio::time::timeout(CHECK_TIMEOUT, server.cache.sync()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.message),
                    Err(_) => Err(format!(
                        "the watch cache did not catch up within {CHECK_TIMEOUT:?}"
                    )),
                }
            }
        }
    }
}

/// The checks of an endpoint: liveness does not depend on the store (a
/// restart would not bring it back), readiness does.
fn checks(endpoint: &str) -> &'static [Check] {
    match endpoint {
        "livez" => &[Check::Ping],
        _ => &[Check::Ping, Check::Etcd, Check::InformerSync],
    }
}

/// Whether `path` is a health endpoint (`/livez`, `/readyz`, `/healthz`,
/// or one of their checks).
pub fn handles(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    matches!(first, "livez" | "readyz" | "healthz")
}

/// The status code and text body for `path` with `query`.
pub async fn answer(
    server: &ApiServer,
    path: &str,
    query: &crate::request::Query,
) -> (u16, String) {
    let mut parts = path.trim_start_matches('/').split('/');
    let endpoint = parts.next().unwrap_or("readyz");
    let single = parts.next().filter(|s| !s.is_empty());
    let checks = checks(endpoint);
    if let Some(name) = single {
        let Some(check) = checks.iter().find(|c| c.name() == name) else {
            return (404, "404 page not found\n".into());
        };
        return match check.run(server).await {
            Ok(()) => (200, "ok".into()),
            Err(e) => (500, format!("internal server error: {e}\n")),
        };
    }
    // (One `exclude` is kept by this query map; a comma-separated list works too.)
    let excluded: Vec<&str> = query
        .get("exclude")
        .map(|e| e.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let verbose = query.flag("verbose");
    let mut out = String::new();
    let mut failed = false;
    for check in checks.iter().filter(|c| !excluded.contains(&c.name())) {
        match check.run(server).await {
            Ok(()) => out.push_str(&format!("[+]{} ok\n", check.name())),
            Err(e) => {
                tracing::warn!(endpoint, check = check.name(), error = %e, "health check failed");
                failed = true;
                out.push_str(&format!("[-]{} failed: reason withheld\n", check.name()));
            }
        }
    }
    for name in &excluded {
        if checks.iter().any(|c| c.name() == *name) {
            out.push_str(&format!("[+]{name} excluded: ok\n"));
        }
    }
    if failed {
        (500, format!("{out}{endpoint} check failed\n"))
    } else if verbose {
        (200, format!("{out}{endpoint} check passed\n"))
    } else {
        (200, "ok".into())
    }
}
