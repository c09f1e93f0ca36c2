//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's leaderelection does
//! it: optimistic concurrency on the Lease's resourceVersion (create, or replace with the version
//! read), expiry judged by when this replica last saw the record change (not by the holder's
//! clock), and a leader that steps down when it could not renew within the renew deadline, which
//! is shorter than the lease duration so two leaders never overlap.
//!
//! Written here rather than taken from a crate: `kube-lease-manager` (the one maintained crate for
//! kube 5) locks through server-side-apply field ownership instead of resourceVersion
//! preconditions and has no renew deadline.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Timings; the defaults are client-go's.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease is good for without renewal: others wait this long before taking over.
    pub lease_duration: Duration,
    /// The leader gives up if it could not renew for this long.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

impl LeaseSettings {
    pub fn new(namespace: &str, identity: &str) -> LeaseSettings {
        LeaseSettings {
            name: "egress-controller".into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What this replica last saw of the record, and when it changed.
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    at: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    metrics: Metrics,
    observed: Option<Observed>,
}

impl Elector {
    pub fn new(client: kube::Client, settings: LeaseSettings, metrics: Metrics) -> Elector {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            metrics,
            observed: None,
        }
    }

    /// Campaigns until `stop`, telling `leader` whenever leadership changes. On `stop` a leader
    /// releases the Lease (holderIdentity cleared) before returning, so the other replica takes
    /// over at its next retry instead of after the lease duration.
    pub async fn run(mut self, leader: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        loop {
            // Follower: try every retry period.
            loop {
                if *stop.borrow() {
                    return;
                }
                match self.try_acquire_or_renew().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => self.failed("acquire", &e),
                }
                if wait_or_stop(&mut stop, self.settings.retry_period).await {
                    return;
                }
            }
            tracing::info!(identity = %self.settings.identity, lease = %self.settings.name, "became leader");
            self.metrics.set_leader(true);
            let _ = leader.send(true);
            let mut renewed = Instant::now();
            loop {
                if wait_or_stop(&mut stop, self.settings.retry_period).await {
                    let _ = leader.send(false);
                    self.metrics.set_leader(false);
                    self.release().await;
                    return;
                }
                match self.try_acquire_or_renew().await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => {
                        tracing::warn!("lease taken by another replica");
                        break;
                    }
                    Err(e) => {
                        self.failed("renew", &e);
                        if renewed.elapsed() >= self.settings.renew_deadline {
                            tracing::warn!("could not renew the lease within the renew deadline");
                            break;
                        }
                    }
                }
            }
            let _ = leader.send(false);
            self.metrics.set_leader(false);
            tracing::info!(identity = %self.settings.identity, "stopped leading");
        }
    }

    fn failed(&self, what: &str, e: &kube::Error) {
        let code = match e {
            kube::Error::Api(s) => s.code.to_string(),
            _ => "transport".into(),
        };
        self.metrics.api_error("leases", &code);
        tracing::warn!(what, error = %e, "lease call failed");
    }

    /// One attempt: `Ok(true)` when this replica holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let me = self.settings.identity.clone();
        let duration = i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        self.observe(holder.clone(), spec.renew_time.clone());
        let held_by_me = holder.as_deref() == Some(me.as_str());
        if !held_by_me {
            let expired = self
                .observed
                .as_ref()
                .is_none_or(|o| o.at.elapsed() >= self.settings.lease_duration);
            if holder.is_some() && !expired {
                return Ok(false);
            }
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            spec.holder_identity = Some(me);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(duration);
        // `lease` carries the resourceVersion read: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn observe(&mut self, holder: Option<String>, renew_time: Option<MicroTime>) {
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.holder != holder || o.renew_time != renew_time);
        if changed {
            self.observed = Some(Observed {
                holder,
                renew_time,
                at: Instant::now(),
            });
        }
    }

    /// Clears holderIdentity if this replica still holds the Lease.
    async fn release(&mut self) {
        for _ in 0..3 {
            let mut lease = match self.api.get_opt(&self.settings.name).await {
                Ok(Some(lease)) => lease,
                Ok(None) => return,
                Err(e) => {
                    self.failed("release", &e);
                    continue;
                }
            };
            let Some(spec) = lease.spec.as_mut() else {
                return;
            };
            if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
                return;
            }
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
            match self
                .api
                .replace(&self.settings.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => {
                    tracing::info!(identity = %self.settings.identity, "released the lease");
                    return;
                }
                Err(e) => self.failed("release", &e),
            }
        }
    }
}

/// Sleeps for `period`; `true` when `stop` was signalled instead.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, period: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(period) => *stop.borrow(),
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}
