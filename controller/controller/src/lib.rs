//! Tektite's Kubernetes controller: the I/O around the engine's plans.
//!
//! Each reconcile reads what the plan needs (the run, its Task or Pipeline,
//! its pod or child TaskRuns), asks the pure engine
//! (`tektite_engine::{taskrun, pipelinerun}`) for a plan, applies it (create
//! claims and children, delete or cancel them, write the status with
//! server-side apply, record events) and requeues at the next timeout.
//!
//! Guarantees:
//! - children have deterministic names (the engine's), so a replayed event
//!   or a restarted controller finds what exists: a create that answers 409
//!   means the child is already there, never a duplicate;
//! - a user error (a missing Task, an invalid spec, a failed step) ends in
//!   the run's status with Tekton's reason and is not retried; an API error
//!   is returned, and [`error_policy`] requeues with a backoff for its kind;
//! - a child is the run's only when its controller ownerReference carries
//!   the run's UID ([`is_controlled_by`]): a pod or TaskRun that merely has
//!   the expected name or labels is never adopted, patched, cancelled or
//!   deleted, and a name taken by one fails the run;
//! - step reports are believed only where they agree with the kubelet's
//!   view of their containers ([`reports`]).

pub mod app;
pub mod concurrency;
pub mod config;
pub mod lease;
pub mod logs;
pub mod metrics;
pub mod pipelinerun;
pub mod reports;
pub mod resolution;
pub mod taskrun;
pub mod traces;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde::Serialize;
use tektite_engine::pod::{Config, ImageCommand};
use tokio::sync::Mutex;

/// The field manager of every status the controller applies.
pub const MANAGER: &str = "tektite-controller";

/// What a reconcile can fail with (user errors are not errors: they are
/// written into the run's status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed; retried with [`backoff`].
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object has no name or namespace (never from an API server).
    #[error("{0} without a name or a namespace")]
    Unnamed(&'static str),
}

/// How long to wait before retrying after `error`, by kind:
/// - 409 Conflict (someone else wrote first): read again at once (1 s);
/// - 429 Too Many Requests: 5 s;
/// - other API statuses (5xx, 403 while RBAC catches up, ...): 10 s;
/// - transport errors (the API server is away): 15 s.
pub fn backoff(error: &Error) -> Duration {
    match error {
        Error::Kube(kube::Error::Api(s)) if s.code == 409 => Duration::from_secs(1),
        Error::Kube(kube::Error::Api(s)) if s.code == 429 => Duration::from_secs(5),
        Error::Kube(kube::Error::Api(_)) => Duration::from_secs(10),
        Error::Kube(_) => Duration::from_secs(15),
        Error::Unnamed(_) => Duration::from_secs(300),
    }
}

/// Whether an API answer refuses the request for good (a 4xx other than a
/// conflict or throttling: forbidden, invalid, refused by a webhook), so
/// that retrying it as it is cannot help. [`backoff`] still applies where
/// a reconcile returns such an error.
pub fn is_refusal(status: &kube::core::Status) -> bool {
    (400..500).contains(&status.code) && ![404, 409, 429].contains(&status.code)
}

/// What every reconcile shares.
#[allow(missing_debug_implementations)] // the client and recorder are not Debug
pub struct Context {
    pub client: Client,
    /// Defaults and images (Tekton's `config-defaults`, see [`config`]);
    /// replaced when the ConfigMap changes.
    pub config: std::sync::RwLock<Config>,
    /// Looks up the commands of images whose steps have none.
    pub images: Arc<dyn tektite_oci::ImageLookup>,
    /// Image commands already looked up, by image reference.
    pub image_cache: Mutex<BTreeMap<String, ImageCommand>>,
    pub recorder: Recorder,
    pub metrics: Arc<metrics::Metrics>,
    /// The clock (tests fix it).
    pub now: fn() -> Timestamp,
    /// Remote refs (`resolver:`), resolved off the reconcile loop; none
    /// when the resolvers could not be set up (such refs then fail, saying so).
    pub resolution: Option<Arc<resolution::Resolution>>,
    /// How the log archive writes (its limits follow `config-defaults`).
    pub log_settings: Arc<std::sync::RwLock<logs::archive::Settings>>,
    /// Admission of runs under concurrency keys and caps.
    pub queue: concurrency::Queue,
    /// Where ended runs' spans go (`traces`); none in tests that do not
    /// start the exporter.
    pub traces: Option<tektite_telemetry::Traces>,
}

impl Context {
    /// A context for `client` with the engine's default configuration.
    pub fn new(client: Client, images: Arc<dyn tektite_oci::ImageLookup>) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Context {
            client,
            config: std::sync::RwLock::new(Config::default()),
            images,
            image_cache: Mutex::new(BTreeMap::new()),
            recorder,
            metrics: Arc::new(metrics::Metrics::new(
                metrics::Level::Name,
                metrics::Level::Name,
            )),
            now: Timestamp::now,
            resolution: resolution::Resolution::new(std::time::Duration::from_secs(60), Vec::new())
                .ok()
                .map(Arc::new),
            log_settings: Arc::default(),
            queue: concurrency::Queue::default(),
            traces: None,
        }
    }

    /// Where a remote ref stands for a run in `ns` (see
    /// [`resolution::Resolution::poll`]).
    pub fn poll(&self, ns: &str, req: &tektite_resolve::Request) -> resolution::Poll {
        match &self.resolution {
            Some(r) => r.poll(&self.client, ns, req),
            None => resolution::Poll::Failed("the resolvers could not be set up (TLS)".into()),
        }
    }
}

impl Context {
    /// The configuration now in force.
    pub fn config(&self) -> Config {
        self.config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

/// What the caches keep of a TaskRun: never its `managedFields`; of a
/// finished run (which is not reconciled again but for its sidecars: see
/// `taskrun::settle`) only its identity, its status's conditions and times,
/// its pod's name, and its sidecars' states while one of them is live.
/// Child TaskRuns a PipelineRun needs are listed from the API, not the
/// cache.
pub fn trim_task_run(tr: &mut tektite_api::v1::TaskRun) {
    tr.metadata.managed_fields = None;
    let Some(st) = tr.status.take() else { return };
    if tektite_engine::status::is_done(&st.conditions) {
        trim_metadata(&mut tr.metadata);
        tr.spec = Default::default();
        let live = tektite_engine::taskrun::has_live_sidecars(&st);
        tr.status = Some(tektite_api::v1::TaskRunStatus {
            conditions: st.conditions,
            pod_name: st.pod_name,
            start_time: st.start_time,
            completion_time: st.completion_time,
            sidecars: if live { st.sidecars } else { Vec::new() },
            ..Default::default()
        });
    } else {
        tr.status = Some(st);
    }
}

/// A finished run's metadata as cached: its identity and times, and its
/// controller owner (the log archive files a TaskRun's logs under its
/// PipelineRun), without labels, annotations, other owners or finalizers
/// (owner events come from the children's own watch, not from this cache).
fn trim_metadata(m: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    let controller: Vec<_> = m
        .owner_references
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.controller == Some(true))
        .collect();
    *m = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        owner_references: (!controller.is_empty()).then_some(controller),
        name: m.name.take(),
        namespace: m.namespace.take(),
        uid: m.uid.take(),
        resource_version: m.resource_version.take(),
        generation: m.generation,
        creation_timestamp: m.creation_timestamp.take(),
        deletion_timestamp: m.deletion_timestamp.take(),
        ..Default::default()
    };
}

/// What the caches keep of a PipelineRun (as [`trim_task_run`]).
pub fn trim_pipeline_run(pr: &mut tektite_api::v1::PipelineRun) {
    pr.metadata.managed_fields = None;
    let Some(st) = pr.status.take() else { return };
    if tektite_engine::status::is_done(&st.conditions) {
        trim_metadata(&mut pr.metadata);
        pr.spec = Default::default();
        pr.status = Some(tektite_api::v1::PipelineRunStatus {
            conditions: st.conditions,
            start_time: st.start_time,
            completion_time: st.completion_time,
            ..Default::default()
        });
    } else {
        pr.status = Some(st);
    }
}

/// The requeue after a failed reconcile: [`backoff`] for the error's kind.
pub fn error_policy<K>(_obj: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed");
    Action::requeue(backoff(error))
}

/// The kind of a reconcile error, for the errors metric.
pub fn error_kind(error: &Error) -> String {
    match error {
        Error::Kube(kube::Error::Api(s)) => format!("api_{}", s.code),
        Error::Kube(_) => "transport".into(),
        Error::Unnamed(_) => "unnamed".into(),
    }
}

/// Seconds from `start` (else `created`) to `end`, for duration metrics.
fn seconds(
    start: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    created: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    end: Timestamp,
) -> f64 {
    start
        .or(created)
        .map(|t| end.duration_since(t.0).as_secs_f64().max(0.0))
        .unwrap_or(0.0)
}

/// Runs one reconcile of `kind` in its tracing span (kind, namespace,
/// name) and records its count, error kind and duration.
async fn instrumented(
    kind: &'static str,
    ns: &str,
    name: &str,
    ctx: &Context,
    reconcile: impl std::future::Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", kind, ns, name);
    let began = std::time::Instant::now();
    let out = tracing::Instrument::instrument(reconcile, span).await;
    let error = out.as_ref().err().map(error_kind);
    ctx.metrics
        .reconciled(kind, error.as_deref(), began.elapsed());
    out
}

/// Requeue at the plan's next deadline, else wait for a change.
fn action(requeue_after: Option<Duration>) -> Action {
    match requeue_after {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    }
}

/// Records the plan's events about `obj` (best effort: an event that cannot
/// be written is logged, not retried).
async fn record<K>(ctx: &Context, obj: &K, events: &[tektite_engine::status::Event])
where
    K: Resource<DynamicType = ()>,
{
    let reference = obj.object_ref(&());
    for e in events {
        let ev = Event {
            type_: if e.type_ == "Warning" {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.clone(),
            note: Some(e.message.chars().take(1024).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(%err, reason = %e.reason, "cannot record an event");
        }
    }
}

/// The body of a server-side apply of `status` to a `kind` object.
fn status_patch<S: Serialize>(kind: &str, status: &S) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "tekton.dev/v1",
        "kind": kind,
        "status": status,
    })
}

/// A run whose refs are being resolved: its status `Unknown` with the
/// waiting reason of `why` (written once, see
/// `tektite_engine::status::wait_for_refs`), reconciled again in a second.
async fn waiting<K, S>(
    api: &kube::Api<K>,
    (kind, name): (&str, &str),
    mut st: S,
    conditions: impl FnOnce(&mut S) -> &mut Vec<tektite_api::v1::Condition>,
    why: &tektite_engine::params::Failure,
    now: Timestamp,
) -> Result<kube::runtime::controller::Action, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    if tektite_engine::status::wait_for_refs(conditions(&mut st), why.reason, &why.message, now) {
        api.patch_status(
            name,
            &kube::api::PatchParams::apply(MANAGER).force(),
            &kube::api::Patch::Apply(status_patch(kind, &st)),
        )
        .await?;
    }
    Ok(kube::runtime::controller::Action::requeue(
        std::time::Duration::from_secs(1),
    ))
}

/// Whether `child` names the object of UID `owner_uid` as its controller
/// (an ownerReference with `controller: true`). Names and labels are for
/// finding children; this is what makes one ours. An owner without a UID
/// (never one read from an API server) owns nothing.
pub fn is_controlled_by(
    child: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    owner_uid: Option<&str>,
) -> bool {
    let Some(uid) = owner_uid.filter(|u| !u.is_empty()) else {
        return false;
    };
    child
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Whether `result` failed with a 409 Conflict / AlreadyExists.
fn already_exists<T>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: &str) -> tektite_api::v1::TaskRun {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tekton.dev/v1", "kind": "TaskRun",
            "metadata": {"name": "r", "namespace": "ci", "managedFields": [{"manager": "kubectl"}]},
            "spec": {"taskRef": {"name": "t"}},
            "status": {"podName": "r-pod", "taskSpec": {"steps": [{"name": "s", "image": "alpine"}]},
                       "conditions": [{"type": "Succeeded", "status": status, "reason": "x", "message": "",
                                       "lastTransitionTime": "2026-11-27T10:00:00Z"}]}}))
        .unwrap()
    }

    #[test]
    fn finished_runs_are_cached_trimmed_running_ones_whole() {
        let mut done = run("True");
        trim_task_run(&mut done);
        assert!(done.metadata.managed_fields.is_none());
        assert!(done.spec.task_ref.is_none());
        let st = done.status.unwrap();
        assert!(st.task_spec.is_none());
        assert_eq!(st.conditions.len(), 1);
        assert_eq!(st.pod_name.as_deref(), Some("r-pod"));

        // A live sidecar's state is kept (settle needs it), not an ended one's.
        for (state, kept) in [
            (serde_json::json!({"running": {}}), true),
            (serde_json::json!({"terminated": {"exitCode": 0}}), false),
        ] {
            let mut done = run("True");
            let mut sidecar = state;
            sidecar["name"] = "db".into();
            done.status.as_mut().unwrap().sidecars = vec![serde_json::from_value(sidecar).unwrap()];
            trim_task_run(&mut done);
            assert_eq!(done.status.unwrap().sidecars.len(), usize::from(kept));
        }

        // Its PipelineRun (the controller owner) is kept, other owners not.
        let mut owned = run("True");
        owned.metadata.owner_references = serde_json::from_value(serde_json::json!([
            {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "name": "p", "uid": "u1", "controller": true},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u2"}]))
        .unwrap();
        trim_task_run(&mut owned);
        let owners = owned.metadata.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, "u1");

        let mut running = run("Unknown");
        trim_task_run(&mut running);
        assert!(running.metadata.managed_fields.is_none());
        assert!(running.spec.task_ref.is_some());
        assert!(running.status.unwrap().task_spec.is_some());
    }
}
