//! The TaskRun state machine: from what is observed (the run, its resolved
//! spec, its pod, `now`) to a plan (the pod to create or delete, the new
//! status, when to look again). Tekton's reconciler order: start → done →
//! cancelled → pending → timed out → resolution/validation → pod → retry.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tektite_api::v1::{Condition, TaskRun, TaskRunStatus, TaskSpec};

use crate::params::Failure;
use crate::pod::{self, BuildError, Config, ImageCommand};
use crate::status::{self, Event, SIDECARS_STOPPED, condition, reason, set_condition};

/// The resolved Task of a run, or why it could not be resolved.
#[derive(Debug, Clone, Copy)]
pub enum Resolved<'a> {
    /// The spec, and the referenced Task's name (`None` when embedded).
    Spec(&'a TaskSpec, Option<&'a str>),
    /// `taskRef` could not be resolved (reason `CouldntGetTask`, …).
    Failed(&'a Failure),
}

/// Everything the state machine looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub task_run: &'a TaskRun,
    pub resolved: Resolved<'a>,
    /// The pod of the current attempt, if it exists.
    pub pod: Option<&'a Pod>,
    pub images: &'a BTreeMap<String, ImageCommand>,
    pub now: Timestamp,
}

/// What to do.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The status to write (None: unchanged).
    pub status: Option<TaskRunStatus>,
    pub create_pod: Option<Pod>,
    pub create_claims: Vec<PersistentVolumeClaim>,
    /// Delete this pod (cancel, timeout, fatal errors).
    pub delete_pod: Option<String>,
    /// Set `tekton.dev/ready=READY` on the pod: its sidecars are ready.
    pub mark_ready: Option<String>,
    /// Stop the sidecars still running in the pod of a run that has ended
    /// or is to be retried (Tekton's way: see [`StopSidecars`]).
    pub stop_sidecars: Option<StopSidecars>,
    /// Look up these images' commands, then reconcile again.
    pub need_images: Vec<String>,
    /// Reconcile again after this long (the timeout), if nothing else happens.
    pub requeue_after: Option<Duration>,
    pub events: Vec<Event>,
}

/// Sidecars to stop: each named container's image becomes `image` (the
/// entrypoint image, which has neither the sidecar's command nor a shell),
/// so the kubelet restarts it into a command that cannot run and it ends,
/// and the pod with it. A pod's images are the one part of its spec that
/// may change. The pod is also annotated [`SIDECARS_STOPPED`], so that the
/// stopped sidecars' exit codes (and the pod's `Failed` phase they cause)
/// are never read as the run's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSidecars {
    pub pod: String,
    pub containers: Vec<String>,
    pub image: String,
}

impl StopSidecars {
    /// The strategic merge patch of the pod that stops them (containers
    /// merge on their names: only the sidecars' images change).
    pub fn patch(&self) -> serde_json::Value {
        let containers: Vec<serde_json::Value> = self
            .containers
            .iter()
            .map(|c| serde_json::json!({"name": c, "image": self.image}))
            .collect();
        serde_json::json!({
            "metadata": {"annotations": {SIDECARS_STOPPED: "true"}},
            "spec": {"containers": containers},
        })
    }
}

impl StopSidecars {
    /// The Warning event of a stop the API server refused (`why`: its
    /// message): the run ends all the same.
    pub fn refused(&self, why: &str) -> Event {
        Event {
            type_: "Warning",
            reason: "SidecarsNotStopped".into(),
            message: format!(
                "cannot stop the sidecars {} of pod {}: {why}",
                self.containers.join(", "),
                self.pod
            ),
        }
    }
}

/// The sidecars of `p` that have not ended and still run their own image.
fn sidecars_to_stop(p: &Pod, image: &str) -> Option<StopSidecars> {
    let specs = p
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let containers: Vec<String> = status::sidecar_states(p)
        .into_iter()
        .filter(|s| s.terminated.is_none())
        .filter_map(|s| s.container)
        .filter(|c| {
            specs
                .iter()
                .any(|spec| spec.name == *c && spec.image.as_deref() != Some(image))
        })
        .collect();
    if containers.is_empty() {
        return None;
    }
    Some(StopSidecars {
        pod: p.metadata.name.clone()?,
        containers,
        image: image.to_string(),
    })
}

/// Whether a finished run's status still shows a sidecar that has not
/// ended: [`settle`] has work to do.
pub fn has_live_sidecars(st: &TaskRunStatus) -> bool {
    st.sidecars.iter().any(|s| s.terminated.is_none())
}

/// Plans what is left to do for a finished TaskRun: its pod's sidecars.
/// Those still running their own image are stopped (a stop that did not
/// happen before the run ended); once every sidecar has ended, the status
/// records their final states (the status written when the run ended saw
/// them running). Nothing when the run's status shows no live sidecar, or
/// the pod is gone (nothing can be learnt of them then).
pub fn settle(tr: &TaskRun, pod: Option<&Pod>, config: &Config) -> Plan {
    let mut plan = Plan::default();
    let (Some(st), Some(p)) = (tr.status.as_ref(), pod) else {
        return plan;
    };
    if !has_live_sidecars(st) || p.metadata.name != st.pod_name {
        return plan;
    }
    plan.stop_sidecars = sidecars_to_stop(p, &config.entrypoint_image);
    let sidecars = status::sidecar_states(p);
    if sidecars.iter().all(|s| s.terminated.is_some()) && sidecars != st.sidecars {
        let mut st = st.clone();
        st.sidecars = sidecars;
        plan.status = Some(st);
    }
    plan
}

fn go(d: Duration) -> String {
    pod::go_duration(d)
}

/// Plans one reconcile of a TaskRun.
pub fn reconcile(obs: Observed<'_>, config: &Config) -> Plan {
    let tr = obs.task_run;
    let name = tr.metadata.name.clone().unwrap_or_default();
    let mut plan = Plan::default();
    let mut st = tr.status.clone().unwrap_or_default();
    let before = st.clone();

    if status::is_done(&st.conditions) {
        return settle(tr, obs.pod, config);
    }
    start(tr, &mut st, &mut plan, obs.now);
    if tr.spec.status.as_deref() == Some("TaskRunCancelled") {
        let msg = format!(
            "TaskRun {name:?} was cancelled. {}",
            tr.spec.status_message.clone().unwrap_or_default()
        );
        end_early(obs, &mut st, &mut plan, reason::CANCELLED, msg);
        plan.status = Some(st);
        return plan;
    }
    if tr.spec.status.as_deref() == Some("TaskRunPending") {
        let msg = format!("TaskRun {name:?} is pending");
        let c = condition("Unknown", reason::RUN_PENDING, msg, obs.now);
        set_condition(&mut st.conditions, c);
        plan.status = (st != before).then_some(st);
        return plan;
    }
    if let Some(t) = pod::timeout(tr, config)
        && let Some(msg) = check_timeout(&name, t, &st, &mut plan, obs.now)
    {
        let msg = msg + &obs.pod.map(sidecars_not_ready).unwrap_or_default();
        end_early(obs, &mut st, &mut plan, reason::TIMEOUT, msg);
        plan.status = Some(st);
        return plan;
    }
    let (spec, task_name) = match obs.resolved {
        Resolved::Spec(s, n) => (s, n),
        Resolved::Failed(f) => {
            fail(&mut st, &mut plan, f.reason, f.message.clone(), obs.now);
            plan.requeue_after = None;
            plan.status = Some(st);
            return plan;
        }
    };
    match obs.pod {
        None => create_pod(obs, spec, task_name, config, &mut st, &mut plan),
        Some(p) => {
            let spec = st.task_spec.as_deref().unwrap_or(spec);
            st = status::from_pod(&with_status(tr, &st), spec, p, obs.now);
            follow_pod(tr, p, config, &mut st, &mut plan, obs.now);
        }
    }
    if st != before {
        plan.status = Some(st);
    }
    plan
}

/// A run seen for the first time (and not pending) starts `now`.
fn start(tr: &TaskRun, st: &mut TaskRunStatus, plan: &mut Plan, now: Timestamp) {
    if st.start_time.is_some() || tr.spec.status.as_deref() == Some("TaskRunPending") {
        return;
    }
    st.start_time = Some(Time(now));
    set_condition(
        &mut st.conditions,
        condition("Unknown", reason::STARTED, "", now),
    );
    plan.events.push(Event {
        type_: "Normal",
        reason: reason::STARTED.into(),
        message: String::new(),
    });
}

/// Ends the run with `why` and a Warning event: `Succeeded=False`, completed
/// `now`.
fn fail(st: &mut TaskRunStatus, plan: &mut Plan, why: &str, message: String, now: Timestamp) {
    set_condition(
        &mut st.conditions,
        condition("False", why, message.clone(), now),
    );
    st.completion_time = Some(Time(now));
    plan.events.push(Event {
        type_: "Warning",
        reason: why.into(),
        message,
    });
}

/// Ends a run before its pod has (cancelled, timed out): what the pod shows
/// so far is kept, its steps and sidecars end with `why`, and it is deleted.
fn end_early(obs: Observed<'_>, st: &mut TaskRunStatus, plan: &mut Plan, why: &str, msg: String) {
    let (tr, now) = (obs.task_run, obs.now);
    if let Some(p) = obs.pod {
        *st = status::from_pod(&with_status(tr, st), spec_of(obs.resolved), p, now);
        status::terminate_steps(st, why, p, tr, now);
        status::terminate_sidecars(st, why, p.metadata.name.as_deref().unwrap_or(""), now);
        plan.delete_pod = p.metadata.name.clone();
    }
    fail(st, plan, why, msg, now);
}

/// The timeout message when the run has had `timeout` since it started;
/// otherwise none, and the plan looks again when the timeout is due.
fn check_timeout(
    name: &str,
    timeout: Duration,
    st: &TaskRunStatus,
    plan: &mut Plan,
    now: Timestamp,
) -> Option<String> {
    let start = st.start_time.as_ref()?;
    let elapsed = Duration::try_from(now.duration_since(start.0)).unwrap_or_default();
    if elapsed >= timeout {
        return Some(format!(
            "TaskRun {name:?} failed to finish within {:?}",
            go(timeout)
        ));
    }
    plan.requeue_after = Some(timeout - elapsed);
    None
}

/// No pod yet: build it (or ask for the images whose commands it needs, or
/// fail the run when it cannot be built).
fn create_pod(
    obs: Observed<'_>,
    spec: &TaskSpec,
    task_name: Option<&str>,
    config: &Config,
    st: &mut TaskRunStatus,
    plan: &mut Plan,
) {
    let staged = with_status(obs.task_run, st);
    let input = pod::Input {
        task_run: &staged,
        spec,
        task_name,
        images: obs.images,
    };
    match pod::build(input, config) {
        Ok(p) => {
            st.pod_name = p.pod.metadata.name.clone();
            if st.task_spec.is_none() {
                st.task_spec = Some(Box::new(p.spec.clone()));
            }
            set_condition(
                &mut st.conditions,
                condition("Unknown", reason::PENDING, "Pending", obs.now),
            );
            plan.create_pod = Some(p.pod);
            plan.create_claims = p.claims;
        }
        Err(BuildError::NeedImages(images)) => {
            plan.need_images = images;
        }
        Err(BuildError::Failed(f)) => {
            fail(st, plan, f.reason, f.message, obs.now);
            plan.requeue_after = None;
        }
    }
}

/// The pod exists and `st` was read from it: mark it ready once its
/// sidecars are, and when it has failed with retries left, archive this
/// attempt and start another; when it is done, stop its sidecars and
/// record the end.
fn follow_pod(
    tr: &TaskRun,
    p: &Pod,
    config: &Config,
    st: &mut TaskRunStatus,
    plan: &mut Plan,
    now: Timestamp,
) {
    if sidecars_ready(p) {
        plan.mark_ready = p.metadata.name.clone();
    }
    let retries = tr.spec.retries.unwrap_or(0).max(0) as usize;
    if is_failed(st) && st.retries_status.len() < retries {
        retry(st, now);
        plan.requeue_after = Some(Duration::ZERO);
        plan.stop_sidecars = sidecars_to_stop(p, &config.entrypoint_image);
    } else if status::is_done(&st.conditions) {
        plan.requeue_after = None;
        plan.stop_sidecars = sidecars_to_stop(p, &config.entrypoint_image);
        plan.events.push(status::end_event(&st.conditions));
    }
}

/// Archives a failed attempt in `retriesStatus` and makes the run
/// `ToBeRetried`, with no pod, steps, sidecars or results.
fn retry(st: &mut TaskRunStatus, now: Timestamp) {
    let message = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Succeeded")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    let mut archived = st.clone();
    archived.retries_status.clear();
    st.retries_status.push(archived);
    st.start_time = None;
    st.completion_time = None;
    st.pod_name = None;
    st.results.clear();
    st.steps.clear();
    st.sidecars.clear();
    st.image_pulls.clear();
    set_condition(
        &mut st.conditions,
        condition("Unknown", reason::TO_BE_RETRIED, message, now),
    );
}

/// Whether the `Succeeded` condition is False.
fn is_failed(st: &TaskRunStatus) -> bool {
    Condition::succeeded(&st.conditions).is_some_and(|c| c.status == "False")
}

fn spec_of(r: Resolved<'_>) -> &TaskSpec {
    static EMPTY: std::sync::OnceLock<TaskSpec> = std::sync::OnceLock::new();
    match r {
        Resolved::Spec(s, _) => s,
        Resolved::Failed(_) => EMPTY.get_or_init(TaskSpec::default),
    }
}

fn with_status(tr: &TaskRun, st: &TaskRunStatus) -> TaskRun {
    let mut t = tr.clone();
    t.status = Some(st.clone());
    t
}

/// A pod with sidecars whose sidecars all run and are ready (or have
/// ended), and that is not yet marked ready.
fn sidecars_ready(p: &Pod) -> bool {
    let ready = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("tekton.dev/ready"))
        .is_some_and(|v| v == "READY");
    if ready {
        return false;
    }
    let Some(ps) = &p.status else { return false };
    if ps.phase.as_deref() != Some("Running") {
        return false;
    }
    let sidecars: Vec<_> = ps
        .container_statuses
        .iter()
        .flatten()
        .filter(|c| !c.name.starts_with("step-"))
        .collect();
    !sidecars.is_empty()
        && sidecars.iter().all(|c| {
            let s = c.state.as_ref();
            (s.is_some_and(|s| s.running.is_some()) && c.ready)
                || s.is_some_and(|s| s.terminated.is_some())
        })
}

/// The annotation (prefix, then the container's name) on an observed pod
/// saying why a container is not ready: its last probe failure, as a
/// kubelet reports it in an event. The local runtimes write it.
pub const NOT_READY_ANNOTATION: &str = "tektite.dev/not-ready.";

/// What a run that ends before its steps were released says of the
/// sidecars that held them back: each one running but not ready, with why
/// when the pod says (see [`NOT_READY_ANNOTATION`]). Empty once the pod
/// is marked ready, or when no sidecar held it back.
pub fn sidecars_not_ready(p: &Pod) -> String {
    let annotations = p.metadata.annotations.clone().unwrap_or_default();
    if annotations
        .get("tekton.dev/ready")
        .is_some_and(|v| v == "READY")
    {
        return String::new();
    }
    let held: Vec<String> = p
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter(|c| !c.name.starts_with("step-") && !c.ready)
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .map(|c| {
            let name = c.name.trim_start_matches("sidecar-");
            match annotations.get(&format!("{NOT_READY_ANNOTATION}{}", c.name)) {
                Some(why) => format!("{name:?} ({why})"),
                None => format!("{name:?}"),
            }
        })
        .collect();
    if held.is_empty() {
        return String::new();
    }
    format!(
        ": the steps never started, waiting for the sidecar{} {} to be ready",
        if held.len() == 1 { "" } else { "s" },
        held.join(", ")
    )
}
