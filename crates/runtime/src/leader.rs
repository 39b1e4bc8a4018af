//! Leader election on a coordination.k8s.io/v1 Lease, as client-go's
//! leaderelection does: acquire a free or expired lease, renew it while
//! working, stop working when renewal fails past the renew deadline.
//! Expiry is judged on the local clock from when this client last saw the
//! lease change (never by comparing clocks across machines).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, PostParams};
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        // kube-scheduler and kube-controller-manager defaults.
        LeaderConfig {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    config: LeaderConfig,
    observed: Option<(String, Instant)>,
}

impl LeaderElector {
    /// Elect on Lease `name` in `namespace` (kube-system for control-plane components).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        config: LeaderConfig,
    ) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            config,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt to acquire or renew. Ok(true) when this identity holds the lease.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = crate::now_micro();
        let secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(15);
        let current = match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: kube::api::ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
            Some(l) => l,
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        // Track when the lease record last changed, on our clock.
        let record = format!("{holder}/{:?}", spec.renew_time.as_ref().map(|t| t.0));
        let changed = self.observed.as_ref().is_none_or(|(r, _)| *r != record);
        if changed {
            self.observed = Some((record, Instant::now()));
        }
        let observed_at = self
            .observed
            .as_ref()
            .map(|(_, t)| *t)
            .unwrap_or_else(Instant::now);
        let held_by_us = holder == self.identity;
        let expired =
            holder.is_empty() || observed_at + self.config.lease_duration <= Instant::now();
        if !held_by_us && !expired {
            return Ok(false);
        }
        let mut lease = current;
        let mut new_spec = spec.clone();
        new_spec.renew_time = Some(now.clone());
        new_spec.lease_duration_seconds = Some(secs);
        if !held_by_us {
            new_spec.holder_identity = Some(self.identity.clone());
            new_spec.acquire_time = Some(now);
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(new_spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Run `work` whenever this identity leads, until `shutdown` resolves.
    /// `work` is dropped (cancelled) when leadership is lost, and started
    /// again if it is regained.
    pub async fn run<F, Fut>(mut self, shutdown: impl Future<Output = ()>, mut work: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        loop {
            // Follower: try every retry period.
            loop {
                match self.try_acquire_or_renew().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(lease = %self.name, error = %e, "leader election attempt failed")
                    }
                }
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(self.config.retry_period) => {}
                }
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
            let fut = work();
            tokio::pin!(fut);
            let mut last_renew = Instant::now();
            let lost = loop {
                tokio::select! {
                    () = &mut shutdown => return,
                    () = &mut fut => {
                        // Work finished by itself: keep the lease until shutdown.
                        std::future::pending::<()>().await;
                    }
                    () = tokio::time::sleep(self.config.retry_period) => {
                        match self.try_acquire_or_renew().await {
                            Ok(true) => last_renew = Instant::now(),
                            Ok(false) => break true,
                            Err(e) => {
                                tracing::warn!(lease = %self.name, error = %e, "lease renewal failed");
                                if last_renew.elapsed() >= self.config.renew_deadline {
                                    break true;
                                }
                            }
                        }
                    }
                }
            };
            if lost {
                tracing::warn!(lease = %self.name, identity = %self.identity, "lost leadership");
            }
        }
    }
}
