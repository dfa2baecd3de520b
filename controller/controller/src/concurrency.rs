//! Admission of PipelineRuns under concurrency keys and the namespace's
//! cap (the decision is `tektite_engine::concurrency`'s; this is its I/O).
//!
//! A run not yet started is admitted, kept queued, or cancelled here, before
//! the engine plans it. The queue is the runs themselves: a run's settings
//! are recorded in its status the first time it is seen, and a run holds a
//! place from `status.concurrency.admittedTime` (written, and acknowledged,
//! before anything of it starts) until it is done. So a restarted
//! controller or a new leader derives the same queue, and a run queued is
//! never lost.
//!
//! Two reconciles of one namespace decide one after the other (a lock per
//! namespace). The cache answers "wait" cheaply; "admit" is confirmed on a
//! fresh list from the API server, so a cache that lags never lets two runs
//! hold a limit-1 key. When a run that held a place ends, the runs its end
//! lets start (and those queued behind the same key, whose positions
//! moved) are reconciled at once; every queued run also looks again every
//! 30 s (a holder deleted outright, a cap raised).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use tektite_api::v1::{PipelineRun, PipelineSpec};
use tektite_engine::concurrency::{self as decision, Verdict};
use tektite_engine::params::Failure;
use tektite_engine::pipelinerun;
use tektite_engine::status::is_done;
use tokio::sync::mpsc::UnboundedSender;

use crate::{Context, Error, action};

/// What the controller keeps for admission: a lock per namespace, the
/// PipelineRun cache (when running as the controller) and the way to
/// reconcile runs an end lets start.
#[derive(Default)]
#[allow(missing_debug_implementations)] // the store is not Debug
pub struct Queue {
    locks: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cache: OnceLock<Store<PipelineRun>>,
    wake: OnceLock<UnboundedSender<ObjectRef<PipelineRun>>>,
}

impl Queue {
    /// Uses `cache` for decisions to wait, and `wake` to reconcile runs.
    pub fn connect(
        &self,
        cache: Store<PipelineRun>,
        wake: UnboundedSender<ObjectRef<PipelineRun>>,
    ) {
        let _ = self.cache.set(cache);
        let _ = self.wake.set(wake);
    }

    fn lock_of(&self, ns: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(ns.to_string()).or_default().clone()
    }

    /// Every run of `ns` the cache has, done or not (`None` without one).
    pub fn cached_runs(&self, ns: &str) -> Option<Vec<Arc<PipelineRun>>> {
        let cache = self.cache.get()?;
        Some(
            cache
                .state()
                .into_iter()
                .filter(|pr| pr.metadata.namespace.as_deref() == Some(ns))
                .collect(),
        )
    }

    /// The not-done runs of `ns` as the cache has them (`None` without one).
    fn cached(&self, ns: &str) -> Option<Vec<Arc<PipelineRun>>> {
        let mut runs = self.cached_runs(ns)?;
        runs.retain(|pr| !pr.status.as_ref().is_some_and(|s| is_done(&s.conditions)));
        Some(runs)
    }

    /// The decision for `me` over the cache's runs of `ns` (`None` without
    /// a cache): what a reconcile of a queued run decides before any API
    /// call.
    pub fn decision(&self, ns: &str, me: &PipelineRun, cap: Option<u32>) -> Option<Verdict> {
        Some(decide(&self.cached(ns)?, me, cap))
    }

    /// The queued runs of `ns` to reconcile now that `pr` has ended: those
    /// the decision without it admits, and the first [`FRONT`] queued
    /// behind its key (their positions moved; the others see theirs at
    /// their next look). None without a cache, or when neither a key nor
    /// the namespace's cap applied to it.
    pub fn to_wake(&self, pr: &PipelineRun, ns: &str, cap: Option<u32>) -> Vec<String> {
        let key = my_key(pr);
        if key.is_none() && cap.is_none() {
            return Vec::new();
        }
        let Some(runs) = self.cached(ns) else {
            return Vec::new();
        };
        let others = runs
            .iter()
            .filter(|r| r.metadata.name != pr.metadata.name)
            .map(|r| &**r);
        let entries = decision::entries(others);
        let verdict = decision::decide_for(&entries, cap, "");
        let mut out: Vec<String> = verdict.admit.into_iter().collect();
        if let Some(k) = key {
            for name in decision::front(&entries, k, FRONT) {
                if !out.iter().any(|o| o == name) {
                    out.push(name.to_string());
                }
            }
        }
        out
    }

    /// Running and queued runs per (namespace, key), from the cache.
    pub fn counts(&self) -> crate::metrics::QueueCounts {
        let mut out = crate::metrics::QueueCounts::new();
        let Some(cache) = self.cache.get() else {
            return out;
        };
        for pr in cache.state() {
            let Some(key) = pr
                .status
                .as_ref()
                .and_then(|s| s.concurrency.as_ref())
                .and_then(|c| c.key.clone())
            else {
                continue;
            };
            let ns = pr.metadata.namespace.clone().unwrap_or_default();
            let e = out.entry((ns, key)).or_default();
            if decision::holds(&pr) {
                e.0 += 1;
            } else if queued(&pr) {
                e.1 += 1;
            }
        }
        out.retain(|_, (r, q)| *r + *q > 0);
        out
    }
}

/// Where a run stands after admission.
#[derive(Debug)]
pub enum Admission {
    /// Plan it (started, admitted now, or nothing applies): the run with
    /// what admission recorded.
    Go(Arc<PipelineRun>),
    /// It waits (its status says why): requeue so.
    Wait(Action),
    /// Its annotations are invalid: it fails.
    Fail(Failure),
}

/// Whether `pr` has its settings recorded and waits to be admitted (its
/// admission needs nothing of its Pipeline).
pub fn queued(pr: &PipelineRun) -> bool {
    decision::is_queued(pr)
}

/// `pr` with its settings: those recorded, else those its annotations and
/// its Pipeline's (`pipeline`) give; `None` when none apply.
fn with_settings(
    pr: &PipelineRun,
    pipeline: Option<(&PipelineSpec, Option<&str>, &BTreeMap<String, String>)>,
    (cap, now): (Option<u32>, k8s_openapi::jiff::Timestamp),
) -> Result<Option<PipelineRun>, Failure> {
    let settings = match pr.status.as_ref().and_then(|s| s.concurrency.clone()) {
        Some(s) => s,
        None => {
            let Some((spec, name, annotations)) = pipeline else {
                return Ok(None);
            };
            match pipelinerun::concurrency_settings(pr, (spec, name), annotations, (cap, now))? {
                Some(s) => s,
                None => return Ok(None),
            }
        }
    };
    let mut me = pr.clone();
    me.status.get_or_insert_with(Default::default).concurrency = Some(settings);
    Ok(Some(me))
}

/// A reconcile again in a second (another write was first, or a run seen
/// before it is waited for).
fn soon() -> Admission {
    Admission::Wait(Action::requeue(std::time::Duration::from_secs(1)))
}

/// Whether `pr` may be planned now; see the module's comment. `pipeline`
/// (its spec, name and annotations) is needed only the first time, to
/// compute its settings; without it a run without recorded settings goes.
///
/// # Errors
/// An API call failed (nothing after it was done).
pub async fn admit(
    pr: Arc<PipelineRun>,
    pipeline: Option<(&PipelineSpec, Option<&str>, &BTreeMap<String, String>)>,
    ns: &str,
    ctx: &Context,
) -> Result<Admission, Error> {
    if !decision::unadmitted(&pr) {
        return Ok(Admission::Go(pr));
    }
    let config = ctx.config();
    let (cap, now) = (config.max_running_pipeline_runs, (ctx.now)());
    let me = match with_settings(&pr, pipeline, (cap, now)) {
        Err(f) => return Ok(Admission::Fail(f)),
        Ok(None) => return Ok(Admission::Go(pr)),
        Ok(Some(me)) => me,
    };
    let name = me.metadata.name.clone().unwrap_or_default();

    let lock = ctx.queue.lock_of(ns);
    let _held = lock.lock().await;
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), ns);
    let runs = match ctx.queue.cached(ns) {
        Some(runs) => runs,
        None => live(&api).await?,
    };
    if let Some(older) = decision::unseen_before(runs.iter().map(|r| &**r), &me, now) {
        // Runs created together start in their order: wait for it to be
        // recorded (or to start without a key).
        tracing::debug!(run = %name, %older, "waiting for an older run to be seen");
        return Ok(soon());
    }
    let verdict = decide(&runs, &me, cap);
    cancel_superseded(&api, &verdict, ctx).await?;
    if verdict.admit.contains(&name) {
        return admit_now(&api, &me, (ns, ctx), (cap, now)).await;
    }
    let Some(wait) = verdict.wait.get(&name) else {
        // Cancelled by a newer run: its next reconcile ends it.
        return Ok(soon());
    };
    let newly = pr.status.as_ref().is_none_or(|s| s.concurrency.is_none());
    let plan = pipelinerun::queued(&me, wait, &config, now);
    if plan.status.is_some() {
        // Written over the run as the API server has it, not as the cache
        // does: an older copy would undo a later write.
        let Some(current) = api.get_opt(&name).await? else {
            return Ok(Admission::Wait(Action::await_change()));
        };
        if !decision::unadmitted(&current) {
            return Ok(soon());
        }
        let fresh = settled(&current, &me);
        let plan = pipelinerun::queued(&fresh, wait, &config, now);
        if let Some(st) = &plan.status {
            let rv = fresh.metadata.resource_version.as_deref();
            crate::pipelinerun::write_status((&fresh, &[]), st, (ns, rv), ctx).await?;
        }
        crate::record(ctx, &fresh, &plan.events).await;
    }
    if newly {
        // Those queued behind the same key now count one more.
        wake_same_key(&runs, &me, ns, ctx);
    }
    Ok(Admission::Wait(action(plan.requeue_after)))
}

/// `current` (the run as the API server has it) with `me`'s settings and
/// what this reconcile added to its status in memory (its source).
fn settled(current: &PipelineRun, me: &PipelineRun) -> PipelineRun {
    let mut fresh = current.clone();
    let mine = me.status.clone().unwrap_or_default();
    let st = fresh.status.get_or_insert_with(Default::default);
    if st.concurrency.is_none() {
        st.concurrency = mine.concurrency;
    }
    if st.provenance.is_none() {
        st.provenance = mine.provenance;
    }
    fresh
}

/// Admits `me` if a fresh list of the namespace agrees (the cache may lag):
/// its status gets `admittedTime` and `waitSeconds`, applied over the run
/// as listed and only if it is still that version (a 409 otherwise: it is
/// reconciled again). Then it is planned.
async fn admit_now(
    api: &Api<PipelineRun>,
    me: &PipelineRun,
    (ns, ctx): (&str, &Context),
    (cap, now): (Option<u32>, k8s_openapi::jiff::Timestamp),
) -> Result<Admission, Error> {
    let runs = live(api).await?;
    let Some(current) = runs.iter().find(|r| r.metadata.name == me.metadata.name) else {
        return Ok(Admission::Wait(Action::await_change()));
    };
    if !decision::unadmitted(current) {
        return Ok(soon());
    }
    let name = me.metadata.name.as_deref().unwrap_or_default();
    if !decide(&runs, me, cap).admit.contains(name) {
        return Ok(soon());
    }
    let mut fresh = settled(current, me);
    let waited = decision::admit(&mut fresh, now);
    let st = fresh.status.clone().unwrap_or_default();
    let rv = fresh.metadata.resource_version.as_deref();
    crate::pipelinerun::write_status((&fresh, &[]), &st, (ns, rv), ctx).await?;
    ctx.metrics.queue_waited(waited);
    Ok(Admission::Go(Arc::new(fresh)))
}

/// Reconciles the first [`FRONT`] other runs queued under `me`'s key
/// (their queue grew).
fn wake_same_key(runs: &[Arc<PipelineRun>], me: &PipelineRun, ns: &str, ctx: &Context) {
    let (Some(wake), Some(key)) = (ctx.queue.wake.get(), my_key(me)) else {
        return;
    };
    let others = runs
        .iter()
        .filter(|r| r.metadata.name != me.metadata.name)
        .map(|r| &**r);
    let entries = decision::entries(others);
    for name in decision::front(&entries, key, FRONT) {
        let _ = wake.send(ObjectRef::new(name).within(ns));
    }
}

/// How many runs at the front of a key's queue an arrival or an end
/// reconciles at once to show their new place (the others look every 30 s).
pub const FRONT: usize = 10;

fn my_key(pr: &PipelineRun) -> Option<&str> {
    pr.status.as_ref()?.concurrency.as_ref()?.key.as_deref()
}

/// The namespace's runs listed from the API server (a consistent read).
async fn live(api: &Api<PipelineRun>) -> Result<Vec<Arc<PipelineRun>>, Error> {
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(Arc::new)
        .collect())
}

/// The decision for `me` over `runs` (see [`decision::decide_run`]).
fn decide(runs: &[Arc<PipelineRun>], me: &PipelineRun, cap: Option<u32>) -> Verdict {
    decision::decide_run(runs.iter().map(|r| &**r), me, cap)
}

/// Cancels the runs newer runs of their key replace (`spec.status` as the
/// verdict says), with an event on each naming the newest run.
async fn cancel_superseded(
    api: &Api<PipelineRun>,
    verdict: &Verdict,
    ctx: &Context,
) -> Result<(), Error> {
    for (victim, how, by) in &verdict.cancel {
        let patch = serde_json::json!({"spec": {"status": how}});
        let r = api
            .patch(victim, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        let pr = match r {
            Ok(pr) => pr,
            // Deleted meanwhile: nothing to cancel.
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(e.into()),
        };
        tracing::info!(run = %victim, %by, how, "cancelled by a newer run of its concurrency key");
        let event = tektite_engine::status::Event {
            type_: "Normal",
            reason: "CancelledByNewerRun".into(),
            message: decision::superseded_message(by),
        };
        crate::record(ctx, &pr, &[event]).await;
    }
    Ok(())
}

/// A run that held a place (or waited) has ended in `ns`: the runs that
/// may start now, and those queued behind its key, are reconciled at once
/// (see [`Queue::to_wake`]).
pub fn ended(pr: &PipelineRun, ns: &str, ctx: &Context) {
    let Some(wake) = ctx.queue.wake.get() else {
        return;
    };
    let cap = ctx.config().max_running_pipeline_runs;
    for name in ctx.queue.to_wake(pr, ns, cap) {
        let _ = wake.send(ObjectRef::new(&name).within(ns));
    }
}
