//! Container lifecycle hooks (↔ pkg/kubelet/lifecycle's handlerRunner and
//! kuberuntime's executePreStopHook / killContainer): postStart and
//! preStop handlers (exec through CRI ExecSync, httpGet, sleep), and the
//! kill of one container with its preStop hook inside the grace period.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container as SpecContainer, LifecycleHandler, Pod};

use crate::probes::{Prober, http_request};
use crate::runtime::{Runtime, RuntimeError};
use crate::sync::{EventKind, PodEvent};

/// How long an exec hook may run when nothing else bounds it (the kubelet
/// gives postStart no timeout; CRI needs one).
pub const HOOK_EXEC_TIMEOUT: Duration = Duration::from_secs(600);

/// The shortest grace a container gets after its preStop hook (↔ minimumGracePeriodInSeconds).
pub const MINIMUM_GRACE_SECONDS: i64 = 2;

/// "name_namespace(uid)" as the kubelet's format.Pod.
fn pod_key(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Run `handler` for container `c` (instance `container_id`) of a pod at
/// `pod_ip`; on failure the message the kubelet puts in its event.
#[allow(clippy::too_many_arguments)]
pub async fn run_handler(
    runtime: &dyn Runtime,
    prober: &dyn Prober,
    pod: &Pod,
    c: &SpecContainer,
    container_id: &str,
    pod_ip: &str,
    handler: &LifecycleHandler,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        let shown = format!("[{}]", command.join(" "));
        let fail = |err: String, output: &str| {
            format!(
                "Exec lifecycle hook ({shown}) for Container {:?} in Pod {:?} failed - error: {err}, message: {output:?}",
                c.name,
                pod_key(pod)
            )
        };
        return match runtime.exec_sync(container_id, &command, timeout).await {
            Ok(r) if r.exit_code == 0 => Ok(()),
            Ok(r) => {
                let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
                let mut output = String::from_utf8_lossy(&r.stdout).into_owned();
                output.push_str(&stderr);
                Err(fail(
                    format!(
                        "command '{}' exited with {}: {stderr}",
                        command.join(" "),
                        r.exit_code
                    ),
                    &output,
                ))
            }
            Err(e) => Err(fail(e.to_string(), "")),
        };
    }
    if let Some(action) = &handler.http_get {
        let path = action.path.clone().unwrap_or_default();
        let fail = |err: String| {
            format!(
                "HTTP lifecycle hook ({path}) for Container {:?} in Pod {:?} failed - error: {err}",
                c.name,
                pod_key(pod)
            )
        };
        let request = http_request(action, c, pod_ip).map_err(&fail)?;
        // As the kubelet: any response will do; only a failed request fails the hook.
        return prober
            .http_get(&request, timeout)
            .await
            .map(|_| ())
            .map_err(fail);
    }
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    Err("Cannot run handler: invalid handler: only exec, httpGet and sleep lifecycle handlers are supported".into())
}

/// The postStart hook of `c` if it has one; the `FailedPostStartHook`
/// message when it failed.
pub async fn post_start(
    runtime: &dyn Runtime,
    prober: &dyn Prober,
    pod: &Pod,
    c: &SpecContainer,
    container_id: &str,
    pod_ip: &str,
) -> Result<(), String> {
    let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
        return Ok(());
    };
    run_handler(
        runtime,
        prober,
        pod,
        c,
        container_id,
        pod_ip,
        handler,
        HOOK_EXEC_TIMEOUT,
    )
    .await
}

/// Stop container `container_id` (an instance of `spec`, when known) as
/// the kubelet's killContainer does once the `Killing` event is out: run
/// the preStop hook for at most `grace` seconds (a failure is a
/// `FailedPreStopHook` event), then StopContainer with what is left of
/// the grace period, at least [`MINIMUM_GRACE_SECONDS`]. Without a hook,
/// StopContainer gets `grace` as is. Returns the events to record.
#[allow(clippy::too_many_arguments)]
pub async fn stop_with_pre_stop(
    runtime: &dyn Runtime,
    prober: &dyn Prober,
    pod: &Pod,
    spec: Option<&SpecContainer>,
    field_path: Option<String>,
    container_id: &str,
    pod_ip: &str,
    grace: i64,
) -> (Result<(), RuntimeError>, Vec<PodEvent>) {
    let mut events = Vec::new();
    let mut grace = grace;
    if let Some(c) = spec
        && let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
        && grace > 0
    {
        let start = tokio::time::Instant::now();
        let limit = Duration::from_secs(grace as u64);
        match tokio::time::timeout(
            limit,
            run_handler(
                runtime,
                prober,
                pod,
                c,
                container_id,
                pod_ip,
                handler,
                limit,
            ),
        )
        .await
        {
            Ok(Ok(())) => tracing::debug!(container = %c.name, "preStop hook completed"),
            Ok(Err(message)) => {
                tracing::warn!(container = %c.name, %message, "preStop hook failed");
                // As the kubelet: the message stays out of the event (secrets).
                events.push(PodEvent {
                    kind: EventKind::Warning,
                    reason: "FailedPreStopHook".into(),
                    message: "PreStopHook failed".into(),
                    field_path,
                });
            }
            Err(_) => {
                tracing::info!(container = %c.name, grace, "preStop hook not completed in the grace period")
            }
        }
        grace = (grace - start.elapsed().as_secs() as i64).max(MINIMUM_GRACE_SECONDS);
    }
    let result = match runtime.stop_container(container_id, grace).await {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    };
    (result, events)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::probes::tests::H;
    use crate::runtime::ExecResult;

    fn pod(lifecycle: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "uid-1"},
            "spec": {"terminationGracePeriodSeconds": 10, "containers": [
                {"name": "app", "image": "busybox:skiff", "lifecycle": lifecycle, "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIP": "10.42.0.2"},
        }))
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn post_start_runs_after_the_start() {
        let mut h = H::new();
        let p = pod(json!({"postStart": {"exec": {"command": ["touch", "/tmp/started"]}}}));
        let st = h.sync(&p).await;
        assert!(st["containerStatuses"][0]["state"]["running"].is_object());
        let calls = h.rt.lock().calls.clone();
        let start = calls
            .iter()
            .position(|c| c.starts_with("StartContainer"))
            .unwrap();
        let exec = calls
            .iter()
            .position(|c| c.starts_with("ExecSync") && c.ends_with("touch /tmp/started"))
            .unwrap();
        assert!(start < exec, "{calls:?}");
        assert!(!h.events().iter().any(|(r, _)| r == "FailedPostStartHook"));
    }

    #[tokio::test(start_paused = true)]
    async fn post_start_failure_kills_the_container() {
        let mut h = H::new();
        h.rt.lock().exec_results.insert(
            ("app".into(), "false".into()),
            ExecResult {
                exit_code: 1,
                stdout: b"out".to_vec(),
                stderr: b"bad".to_vec(),
            },
        );
        let p = pod(json!({"postStart": {"exec": {"command": ["false", "x"]}}}));
        let st = h.sync(&p).await;
        let events = h.events();
        let failed = events
            .iter()
            .find(|(r, _)| r == "FailedPostStartHook")
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("{events:?}"));
        assert_eq!(
            failed,
            "Exec lifecycle hook ([false x]) for Container \"app\" in Pod \"web_default(uid-1)\" failed - error: command 'false x' exited with 1: bad, message: \"outbad\""
        );
        assert!(
            events.contains(&("Killing".into(), "FailedPostStartHook".into())),
            "{events:?}"
        );
        assert_eq!(
            st["containerStatuses"][0]["state"]["waiting"]["reason"], "PostStartHookError",
            "{st:#}"
        );
        assert_eq!(
            st["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
            137
        );
        assert_eq!(h.rt.lock().stops.len(), 1);
        // The next sync restarts it as any failed container.
        let st = h.sync(&p).await;
        assert_eq!(st["containerStatuses"][0]["restartCount"], 1, "{st:#}");
    }

    #[tokio::test(start_paused = true)]
    async fn pre_stop_runs_before_the_stop_and_shortens_the_grace_period() {
        let mut h = H::new();
        let p = pod(json!({"preStop": {"sleep": {"seconds": 3}}}));
        h.sync(&p).await;
        let begin = tokio::time::Instant::now();
        h.w.terminate(&p, 10).await.unwrap();
        assert_eq!(begin.elapsed().as_secs(), 3, "the hook's sleep");
        let stops = h.rt.lock().stops.clone();
        assert_eq!(stops.len(), 1);
        assert_eq!(stops[0].1, 7, "10 s grace less the 3 s the hook took");
        assert!(h.rt.lock().containers.is_empty(), "removed after the stop");
        let events = h.events();
        assert!(
            events.contains(&("Killing".into(), "Stopping container app".into())),
            "{events:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn exec_pre_stop_then_stop_in_that_order() {
        let mut h = H::new();
        let p = pod(json!({"preStop": {"exec": {"command": ["sh", "-c", "touch /tmp/bye"]}}}));
        h.sync(&p).await;
        h.w.terminate(&p, 30).await.unwrap();
        let calls = h.rt.lock().calls.clone();
        let exec = calls
            .iter()
            .position(|c| c.starts_with("ExecSync") && c.ends_with("sh -c touch /tmp/bye"))
            .unwrap();
        let stop = calls
            .iter()
            .position(|c| c.starts_with("StopContainer"))
            .unwrap();
        assert!(exec < stop, "{calls:?}");
        assert_eq!(h.rt.lock().stops[0].1, 30);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pre_stop_longer_than_the_grace_period_is_cut_short() {
        let mut h = H::new();
        let p = pod(json!({"preStop": {"sleep": {"seconds": 60}}}));
        h.sync(&p).await;
        let begin = tokio::time::Instant::now();
        h.w.terminate(&p, 5).await.unwrap();
        assert_eq!(begin.elapsed().as_secs(), 5);
        assert_eq!(h.rt.lock().stops[0].1, MINIMUM_GRACE_SECONDS);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_pre_stop_is_an_event_and_the_stop_goes_on() {
        let mut h = H::new();
        h.rt.lock().exec_results.insert(
            ("app".into(), "false".into()),
            ExecResult {
                exit_code: 2,
                ..Default::default()
            },
        );
        let p = pod(json!({"preStop": {"exec": {"command": ["false"]}}}));
        h.sync(&p).await;
        h.events();
        h.w.terminate(&p, 10).await.unwrap();
        let events = h.events();
        assert!(
            events.contains(&("FailedPreStopHook".into(), "PreStopHook failed".into())),
            "{events:?}"
        );
        assert_eq!(h.rt.lock().stops.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_pre_stop_without_a_grace_period() {
        let mut h = H::new();
        let p = pod(json!({"preStop": {"exec": {"command": ["sh"]}}}));
        h.sync(&p).await;
        h.w.terminate(&p, 0).await.unwrap();
        assert!(h.rt.lock().execs.is_empty());
        assert_eq!(h.rt.lock().stops[0].1, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn http_pre_stop_goes_to_the_pod_and_only_a_failed_request_fails_it() {
        let mut h = H::new();
        let p = pod(json!({"preStop": {"httpGet": {"path": "/shutdown", "port": "http"}}}));
        h.prober.http.lock().unwrap().insert(8080, Ok(500));
        h.sync(&p).await;
        h.events();
        h.w.terminate(&p, 10).await.unwrap();
        let r = h.prober.requests.lock().unwrap()[0].clone();
        assert_eq!(
            (r.host.as_str(), r.port, r.path.as_str()),
            ("10.42.0.2", 8080, "/shutdown")
        );
        assert!(
            !h.events().iter().any(|(r, _)| r == "FailedPreStopHook"),
            "a 500 is an answer"
        );

        let c: SpecContainer = p.spec.as_ref().unwrap().containers[0].clone();
        let handler = c.lifecycle.as_ref().unwrap().pre_stop.clone().unwrap();
        h.prober.http.lock().unwrap().insert(8080, Err("Get \"http://10.42.0.2:8080/shutdown\": dial tcp 10.42.0.2:8080: connect: connection refused".into()));
        let err = run_handler(
            h.rt.as_ref(),
            h.prober.as_ref(),
            &p,
            &c,
            "none",
            "10.42.0.2",
            &handler,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(err.starts_with("HTTP lifecycle hook (/shutdown) for Container \"app\" in Pod \"web_default(uid-1)\" failed - error: Get "), "{err}");
    }
}
