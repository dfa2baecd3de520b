//! Leader election with a `coordination.k8s.io/v1` Lease, so two replicas
//! can run and only one reconciles.
//!
//! One [`step`] reads the Lease and takes or renews it when it is free,
//! expired or already ours. Writes carry the Lease's resourceVersion, so of
//! two replicas racing for an expired Lease one wins and the other gets a
//! 409, which counts as "not the leader". A leader that cannot renew before
//! its Lease expires must stop reconciling ([`run`] returns).
//!
//! Guarantees: at most one holder per Lease duration, as long as clocks
//! agree to within the duration (the Kubernetes leader election contract).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// Who competes for which Lease, and for how long a holder keeps it.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub namespace: String,
    /// This replica (its pod name).
    pub identity: String,
    /// How long a Lease not renewed stays its holder's.
    pub duration: Duration,
    /// How often the holder renews (well under `duration`).
    pub renew_every: Duration,
}

/// Where this replica stands after one [`step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// This replica holds the Lease (just taken or renewed).
    Leader,
    /// Another replica holds it (its identity, when known).
    Follower(Option<String>),
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// Reads the Lease and takes or renews it if it may.
///
/// # Errors
/// An API error other than the 409 of a lost race.
pub async fn step(api: &Api<Lease>, cfg: &Config, now: Timestamp) -> Result<Standing, kube::Error> {
    let mine = |acquire: MicroTime, transitions: i32| LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(seconds(cfg.duration)),
        acquire_time: Some(acquire),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let lost = |r: &kube::Error| matches!(r, kube::Error::Api(s) if s.code == 409);
    let Some(current) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(mine(MicroTime(now), 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Standing::Leader),
            Err(e) if lost(&e) => Ok(Standing::Follower(None)),
            Err(e) => Err(e),
        };
    };
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let held_until = spec.renew_time.as_ref().map(|t| {
        t.0 + Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        )
    });
    let ours = holder.as_deref() == Some(cfg.identity.as_str());
    let free = holder.is_none() || held_until.is_none_or(|t| t <= now);
    if !ours && !free {
        return Ok(Standing::Follower(holder));
    }
    let transitions = spec.lease_transitions.unwrap_or(0);
    let next = if ours {
        mine(
            spec.acquire_time.clone().unwrap_or(MicroTime(now)),
            transitions,
        )
    } else {
        mine(MicroTime(now), transitions + 1)
    };
    let lease = Lease {
        metadata: current.metadata.clone(),
        spec: Some(next),
    };
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(Standing::Leader),
        Err(e) if lost(&e) => Ok(Standing::Follower(holder)),
        Err(e) => Err(e),
    }
}

/// Waits until this replica leads, then keeps the Lease; returns when it
/// cannot be renewed within its duration (the caller must stop
/// reconciling: the process exits and restarts as a follower).
pub async fn run(api: Api<Lease>, cfg: Config, became_leader: tokio::sync::oneshot::Sender<()>) {
    let mut became_leader = Some(became_leader);
    let mut last_renewed: Option<std::time::Instant> = None;
    let mut following: Option<Option<String>> = None;
    let lease = format!("{}/{}", cfg.namespace, cfg.name);
    loop {
        match step(&api, &cfg, Timestamp::now()).await {
            Ok(Standing::Leader) => {
                last_renewed = Some(std::time::Instant::now());
                if let Some(tx) = became_leader.take() {
                    tracing::info!(identity = %cfg.identity, %lease, "leading");
                    let _ = tx.send(());
                }
            }
            Ok(Standing::Follower(holder)) => {
                if became_leader.is_none() {
                    tracing::error!(identity = %cfg.identity, %lease, holder = holder.as_deref().unwrap_or(""), "lease lost");
                    return;
                }
                if following.as_ref() != Some(&holder) {
                    tracing::info!(identity = %cfg.identity, %lease, holder = holder.as_deref().unwrap_or(""), "standing by");
                    following = Some(holder);
                }
            }
            Err(error) => tracing::warn!(%error, %lease, "lease"),
        }
        if became_leader.is_none() && last_renewed.is_some_and(|t| t.elapsed() >= cfg.duration) {
            tracing::error!(identity = %cfg.identity, %lease, duration = ?cfg.duration, "lease not renewed in time");
            return;
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}
