//! The PipelineRun state machine: from the run, its resolved Pipeline and
//! Tasks, its child TaskRuns and `now`, to a plan (TaskRuns to create or
//! cancel, claims to create, the new status, when to look again).
//!
//! Semantics follow Tekton's reconciler: a DAG from `runAfter` and result
//! references; `when` guards only their own task (dependents that need its
//! results are skipped, `runAfter` dependents still run); a failure stops new
//! DAG tasks, lets running ones finish, then runs `finally`; the three
//! cancel modes; pipeline/tasks/finally timeouts; matrix fan-out with results
//! gathered into arrays; retries are the TaskRuns' own; the condition message
//! `Tasks Completed: N (Failed: F, Cancelled C), Skipped: S`.
//!
//! One reconcile is a list of phases over explicit data (`advance`): the
//! run against its pipeline (`check`), where each pipeline task stands
//! (`observe`), timeouts and cancellation, a `Decision` per pipeline task
//! (DAG tasks, then finally tasks; variables from `resolve`) carried out by
//! making TaskRuns (`task_runs`), and the status (`run_status`). Nothing
//! here does I/O: the plan is applied by the caller.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tektite_api::v1::{
    Condition, PipelineRun, PipelineRunStatus, PipelineSpec, PipelineTask, TaskRun, TaskSpec,
};
use tektite_entrypoint::contract as ep;

use crate::concurrency;
use crate::matrix;
use crate::params::Failure;
use crate::pod::{Config, go_duration};
use crate::status::{Event, condition, is_done, set_condition};
use crate::subst::Vars;

mod check;
mod resolve;
mod run_status;
mod task_runs;

use check::Pipeline;
use resolve::{Unresolved, resolve_task, result_vars, when_allows};
use run_status::{child_references, overall, pipeline_results, skipped_tasks};
use task_runs::{claims, make_task_runs, uses_claim_template};

/// Condition and skip reasons of a PipelineRun (Tekton's strings).
pub mod reason {
    pub const STARTED: &str = "Started";
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const COMPLETED: &str = "Completed";
    pub const FAILED: &str = "Failed";
    pub const CANCELLED: &str = "Cancelled";
    pub const STOPPING: &str = "PipelineRunStopping";
    pub const TIMEOUT: &str = "PipelineRunTimeout";
    pub const TIMEOUT_RUNNING_FINALLY: &str = "PipelineRunTimeoutRunningFinally";
    pub const CANCELLED_RUNNING_FINALLY: &str = "CancelledRunningFinally";
    pub const STOPPED_RUNNING_FINALLY: &str = "StoppedRunningFinally";
    pub const PENDING: &str = "PipelineRunPending";
    pub const COULDNT_GET_PIPELINE: &str = "CouldntGetPipeline";
    pub const COULDNT_GET_TASK: &str = "CouldntGetTask";
    pub const VALIDATION_FAILED: &str = "PipelineValidationFailed";
    pub const PARAMETER_MISSING: &str = "ParameterMissing";
    pub const PARAMETER_TYPE_MISMATCH: &str = "ParameterTypeMismatch";
    pub const OBJECT_KEYS_MISSING: &str = "ObjectParameterMissKeys";
    pub const INVALID_WORKSPACE_BINDINGS: &str = "InvalidWorkspaceBindings";
    pub const INVALID_TASK_RUN_SPECS: &str = "InvalidTaskRunSpecs";
    pub const INVALID_GRAPH: &str = "PipelineInvalidGraph";
    pub const INVALID_MATRIX: &str = "InvalidMatrixParameterTypes";
    pub const COULDNT_GET_RESULT: &str = "CouldntGetPipelineResult";

    pub const SKIP_WHEN: &str = "When Expressions evaluated to false";
    pub const SKIP_PARENT: &str = "Parent Tasks were skipped";
    pub const SKIP_RESULTS: &str = "Results were missing";
    pub const SKIP_STOPPING: &str = "PipelineRun was stopping";
    pub const SKIP_GRACEFUL_CANCEL: &str = "PipelineRun was gracefully cancelled";
    pub const SKIP_GRACEFUL_STOP: &str = "PipelineRun was gracefully stopped";
    pub const SKIP_TIMEOUT: &str = "PipelineRun timeout has been reached";
    pub const SKIP_TASKS_TIMEOUT: &str = "PipelineRun Tasks timeout has been reached";
    pub const SKIP_FINALLY_TIMEOUT: &str = "PipelineRun Finally timeout has been reached";
    pub const SKIP_EMPTY_MATRIX: &str = "Matrix Parameters have an empty array";
}

/// `statusMessage` of TaskRuns cancelled with their PipelineRun.
pub const CANCELLED_MESSAGE: &str =
    "TaskRun cancelled as the PipelineRun it belongs to has been cancelled.";
/// `statusMessage` of TaskRuns cancelled because the PipelineRun timed out.
pub const TIMED_OUT_MESSAGE: &str =
    "TaskRun cancelled as the PipelineRun it belongs to has timed out.";

/// Everything the state machine looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub run: &'a PipelineRun,
    /// The resolved Pipeline spec and the Pipeline's name (None when embedded),
    /// or why it could not be resolved (`CouldntGetPipeline`).
    pub pipeline: Result<(&'a PipelineSpec, Option<&'a str>), &'a Failure>,
    /// Specs of the Tasks the pipeline refers to by name.
    pub tasks: &'a BTreeMap<String, TaskSpec>,
    /// The child TaskRuns that exist (labelled `tekton.dev/pipelineRun`).
    pub children: &'a [TaskRun],
    pub now: Timestamp,
}

/// What to do.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub status: Option<PipelineRunStatus>,
    pub create: Vec<TaskRun>,
    /// Claims for `volumeClaimTemplate` workspaces (one per workspace per run).
    pub create_claims: Vec<PersistentVolumeClaim>,
    /// TaskRuns to cancel: name and `statusMessage`.
    pub cancel: Vec<(String, String)>,
    pub requeue_after: Option<Duration>,
    pub events: Vec<Event>,
}

/// Where one pipeline task stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    NotStarted,
    Running,
    Succeeded,
    /// Failed (condition False); `cancelled` by spec, `timed_out` by the run.
    Failed {
        cancelled: bool,
        timed_out: bool,
    },
    Skipped(&'static str),
    /// Its result references could not be resolved though the task it
    /// refers to succeeded: a validation failure that stops the run.
    Invalid(String),
}

impl State {
    fn done(&self) -> bool {
        !matches!(self, State::NotStarted | State::Running)
    }
}

struct Task<'a> {
    /// The pipeline task with pipeline params and context applied.
    pt: &'a PipelineTask,
    /// The pipeline task as written: what is resolved for a TaskRun, with
    /// params, context and results in one pass, so that a value is never
    /// substituted again (a param value holding `$(tasks.a.results.b)`
    /// stays that text).
    raw: &'a PipelineTask,
    finally: bool,
    children: Vec<&'a TaskRun>,
    state: State,
}

fn cond(tr: &TaskRun) -> Option<&Condition> {
    tr.status
        .as_ref()
        .and_then(|s| Condition::succeeded(&s.conditions))
}

fn child_state(children: &[&TaskRun]) -> State {
    if children.is_empty() {
        return State::NotStarted;
    }
    let conds: Vec<Option<&Condition>> = children.iter().map(|c| cond(c)).collect();
    if conds
        .iter()
        .any(|c| c.is_none_or(|c| c.status == "Unknown"))
    {
        return State::Running;
    }
    if conds.iter().all(|c| c.is_some_and(|c| c.status == "True")) {
        return State::Succeeded;
    }
    let cancelled = children.iter().zip(&conds).any(|(tr, c)| {
        c.is_some_and(|c| c.reason.as_deref() == Some("TaskRunCancelled"))
            && tr.spec.status.is_some()
    });
    let timed_out = children
        .iter()
        .any(|tr| tr.spec.status_message.as_deref() == Some(TIMED_OUT_MESSAGE));
    State::Failed {
        cancelled,
        timed_out,
    }
}

fn on_error_continue(pt: &PipelineTask) -> bool {
    pt.on_error.as_deref() == Some("continue")
}

/// A Go-style duration field: `None` unset, `Some(ZERO)` for "no timeout".
fn dur(s: Option<&str>) -> Option<Duration> {
    s.and_then(ep::parse_go_duration).map(|(_, d)| d)
}

struct Timeouts {
    pipeline: Option<Duration>,
    tasks: Option<Duration>,
    finally: Option<Duration>,
}

fn timeouts(pr: &PipelineRun, config: &Config) -> Timeouts {
    let t = pr.spec.timeouts.clone().unwrap_or_default();
    let pipeline = dur(t.pipeline.as_deref()).unwrap_or(config.default_timeout);
    let (tasks, finally) = (dur(t.tasks.as_deref()), dur(t.finally.as_deref()));
    let nz = |d: Duration| (!d.is_zero()).then_some(d);
    let tasks_t = tasks.or_else(|| match (nz(pipeline), finally.and_then(nz)) {
        (Some(p), Some(f)) => p.checked_sub(f),
        _ => None,
    });
    let finally_t = finally.or_else(|| match (nz(pipeline), tasks.and_then(nz)) {
        (Some(p), Some(t)) => p.checked_sub(t),
        _ => None,
    });
    Timeouts {
        pipeline: nz(pipeline),
        tasks: tasks_t.and_then(nz),
        finally: finally_t.and_then(nz),
    }
}

fn elapsed(since: &Time, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since.0)).unwrap_or_default()
}

/// The refs of `spec`'s pipeline tasks to Tasks through resolvers, their
/// params substituted as the run's TaskRuns will have them (the run's
/// params over the Pipeline's defaults, and its context; a task result is
/// left as written, and such a ref is resolved by its TaskRun, once the
/// result is known): what an executor resolves before the engine plans,
/// keeping each spec under [`crate::remote::task_ref_key`] of the ref.
/// Each with its pipeline task's name.
///
/// # Errors
/// The run's params do not fit the Pipeline (the engine fails the run so).
pub fn remote_task_refs(
    pr: &PipelineRun,
    spec: &PipelineSpec,
    pipeline_name: Option<&str>,
    now: Timestamp,
) -> Result<Vec<(String, tektite_api::v1::TaskRef)>, Failure> {
    let run = Run::new(pr, now);
    let me = format!("{}/{}", run.ns, run.name);
    // As Pipeline::check names it: the Pipeline's name, else the run's.
    let label = pipeline_name.unwrap_or(&run.name).to_string();
    let pl = format!("{}/{label}", run.ns);
    let values = check::check_params(pr, spec, &me, &pl)?;
    let vars = check::pipeline_vars(&run, spec, &values, &label);
    let substituted = resolve::substitute_pipeline(spec, &vars)
        .map_err(|e| Failure::new(reason::VALIDATION_FAILED, e))?;
    Ok(substituted
        .tasks
        .iter()
        .chain(&substituted.finally)
        .filter_map(|pt| Some((pt.name.clone(), pt.task_ref.clone()?)))
        .filter(|(_, r)| r.resolver.is_some())
        .collect())
}

/// A run's `pipelineRef` params with the run's params and context in (as
/// Tekton substitutes them: no Pipeline is known yet, so no defaults).
///
/// # Errors
/// A reference that cannot be substituted.
pub fn pipeline_ref_params(pr: &PipelineRun) -> Result<Vec<tektite_api::v1::Param>, String> {
    let Some(r) = &pr.spec.pipeline_ref else {
        return Ok(Vec::new());
    };
    let mut vars = Vars::new(&[]);
    let given: BTreeMap<String, tektite_api::param::ParamValue> = pr
        .spec
        .params
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    crate::params::add_to(&mut vars, &given);
    vars.set_str(
        "context.pipelineRun.name",
        pr.metadata.name.clone().unwrap_or_default(),
    );
    vars.set_str(
        "context.pipelineRun.namespace",
        pr.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
    );
    vars.set_str(
        "context.pipelineRun.uid",
        pr.metadata.uid.clone().unwrap_or_default(),
    );
    let mut out = r.params.clone();
    for p in &mut out {
        p.value = vars
            .param_value(&p.value, "spec.pipelineRef.params")
            .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The Pipeline workspaces `pt` binds: named in its `workspaces`, or used by
/// its embedded spec without being declared (implicit propagation).
pub fn pipeline_workspaces_of(pt: &PipelineTask) -> Vec<String> {
    pt.workspaces
        .iter()
        .chain(&task_runs::propagated_workspaces(pt))
        .map(|w| w.workspace.clone().unwrap_or_else(|| w.name.clone()))
        .collect()
}

/// Plans one reconcile of a PipelineRun: nothing once it is done; a
/// pending run only says so; otherwise it starts (once) and goes through
/// its phases (`advance`), any of which may fail it.
pub fn reconcile(obs: Observed<'_>, config: &Config) -> Plan {
    let mut st = obs.run.status.clone().unwrap_or_default();
    if is_done(&st.conditions) {
        return Plan::default();
    }
    let before = st.clone();
    let run = Run::new(obs.run, obs.now);
    let mut plan = Plan::default();
    let outcome = if let Some(f) = cancelled_in_queue(&run, &st) {
        Err(f)
    } else if hold_pending(&run, &mut st) {
        Ok(())
    } else {
        start(&run, &mut st, &mut plan.events);
        advance(obs, config, &run, &mut st, &mut plan)
    };
    match outcome {
        Ok(()) => plan.status = (st != before).then_some(st),
        Err(failure) => fail(st, &mut plan, failure, run.now),
    }
    plan
}

/// One reconcile of a started run, phase by phase: check its pipeline,
/// observe its tasks, stop what ran out of time or was cancelled, decide
/// the DAG tasks, then the finally tasks, and record its status. `Err`
/// fails the run (what the plan holds so far stays in it).
fn advance(
    obs: Observed<'_>,
    config: &Config,
    run: &Run<'_>,
    st: &mut PipelineRunStatus,
    plan: &mut Plan,
) -> Result<(), Failure> {
    if run.spec_status == "Cancelled" {
        return Err(cancel(run, obs.children, &mut plan.cancel));
    }
    let pipeline = Pipeline::check(run, obs.pipeline, obs.tasks)?;
    st.pipeline_spec
        .get_or_insert_with(|| Box::new(pipeline.spec.clone()));

    // A rerun's reused TaskRuns stand for their tasks, as children.
    let reuse = crate::reuse::of(run.pr).map_err(|m| Failure::new(crate::reuse::INVALID, m))?;
    let with_reused: Vec<TaskRun>;
    let children = match &reuse {
        Some(r) => {
            with_reused = obs
                .children
                .iter()
                .cloned()
                .chain(crate::reuse::children(r, &pipeline.spec))
                .collect();
            &with_reused[..]
        }
        None => obs.children,
    };
    let mut tasks = observe(&pipeline.spec, pipeline.raw, children);
    let n_dag = pipeline.spec.tasks.len();

    let clock = Clock::read(run.pr, config, st, run.now);
    if clock.pipeline_timed_out {
        return Err(time_out(run, &clock, &mut tasks, st, &mut plan.cancel));
    }
    stop_timed_out(&clock, &mut tasks, n_dag, &mut plan.cancel);
    if run.spec_status == "CancelledRunFinally" {
        cancel_for_finally(&tasks, n_dag, &mut plan.cancel);
    }

    let max = concurrency::max_parallel_tasks(run.pr)?;
    let started = tasks.iter().filter(|t| t.state == State::Running).count();
    let mut launcher = Launcher {
        pr: run.pr,
        pipeline_label: &pipeline.label,
        specs: obs.tasks,
        config,
        claims_needed: false,
        slots: max.map(|m| m.saturating_sub(started)),
    };
    decide_dag(
        &mut tasks,
        n_dag,
        &pipeline,
        run.spec_status,
        &mut launcher,
        plan,
    )?;
    decide_finally(
        &mut tasks,
        n_dag,
        &pipeline.vars,
        run.now,
        st,
        &mut launcher,
        plan,
    )?;
    if launcher.claims_needed && obs.children.is_empty() {
        plan.create_claims = claims(run.pr);
    }

    record_status(run, &pipeline.spec, &tasks, n_dag, &clock, st, plan);
    Ok(())
}

/// The run as its messages name it, what its spec asks (`spec.status`),
/// and the time of this reconcile.
struct Run<'a> {
    pr: &'a PipelineRun,
    name: String,
    ns: String,
    /// `spec.status`: empty, `PipelineRunPending`, `Cancelled`,
    /// `CancelledRunFinally` or `StoppedRunFinally`.
    spec_status: &'a str,
    now: Timestamp,
}

impl<'a> Run<'a> {
    fn new(pr: &'a PipelineRun, now: Timestamp) -> Run<'a> {
        Run {
            pr,
            name: pr.metadata.name.clone().unwrap_or_default(),
            ns: pr
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            spec_status: pr.spec.status.as_deref().unwrap_or(""),
            now,
        }
    }
}

/// When the run's timeouts start: its creation for a run that was queued
/// (unless `config` says its start), else its start.
fn timing_start(pr: &PipelineRun, config: &Config, st: &PipelineRunStatus) -> Option<Time> {
    if st.concurrency.is_some() && config.queue_timeout_from_creation {
        return pr
            .metadata
            .creation_timestamp
            .clone()
            .or(st.start_time.clone());
    }
    st.start_time.clone()
}

/// The concurrency settings of a run that has not started (see
/// [`concurrency::settings`]): its key resolved over its params (with the
/// Pipeline's defaults) and context; the cap alone (`capped_only`) when it
/// has no key and `cap` is set; `None` when nothing applies, or when its
/// params do not fit the Pipeline (it then fails as it starts, naming them).
///
/// # Errors
/// The annotations are invalid.
pub fn concurrency_settings(
    pr: &PipelineRun,
    (spec, pipeline): (&PipelineSpec, Option<&str>),
    pipeline_annotations: &BTreeMap<String, String>,
    (cap, now): (Option<u32>, Timestamp),
) -> Result<Option<tektite_api::v1::ConcurrencyStatus>, Failure> {
    let Some(vars) = vars_before_start(pr, (spec, pipeline), now) else {
        return Ok(None);
    };
    let none = BTreeMap::new();
    let own = pr.metadata.annotations.as_ref().unwrap_or(&none);
    let found = concurrency::settings(own, pipeline_annotations, &vars)?;
    if found.is_some() || cap.is_none() {
        return Ok(found);
    }
    // The priority still orders a run that only the cap holds.
    let priority = concurrency::priority(own, pipeline_annotations)?;
    Ok(Some(concurrency::capped_only(priority)))
}

/// The variables a run's own annotations and its Pipeline's may use before
/// it starts: its params (with the Pipeline's defaults) and context; `None`
/// when its params do not fit the Pipeline (it then fails as it starts,
/// naming them).
fn vars_before_start(
    pr: &PipelineRun,
    (spec, pipeline): (&PipelineSpec, Option<&str>),
    now: Timestamp,
) -> Option<crate::subst::Vars> {
    let run = Run::new(pr, now);
    let label = pipeline.unwrap_or(&run.name).to_string();
    let pl = format!("{}/{label}", run.ns);
    let me = format!("{}/{}", run.ns, run.name);
    let values = check::check_params(pr, spec, &me, &pl).ok()?;
    Some(check::pipeline_vars(&run, spec, &values, &label))
}

/// The `tektite.dev/environment` label a run that lacks it gets from its
/// Pipeline's annotation of that name (`crate::dora`), resolved over the
/// run's params (with the Pipeline's defaults) and context, as
/// `deploy-to: $(params.environment)`: `None` when the run has the label,
/// the Pipeline no such annotation, or the run's params do not fit (it
/// then fails as it starts); `Some(Err)` when the value is not a label
/// value, naming the annotation and saying what was expected.
pub fn environment_label(
    pr: &PipelineRun,
    (spec, pipeline): (&PipelineSpec, Option<&str>),
    pipeline_annotations: &BTreeMap<String, String>,
) -> Option<Result<String, String>> {
    let key = crate::dora::ENVIRONMENT_LABEL;
    if pr
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(key))
    {
        return None;
    }
    let template = pipeline_annotations.get(key)?;
    let vars = vars_before_start(pr, (spec, pipeline), Timestamp::UNIX_EPOCH)?;
    let at = format!("pipeline metadata.annotations[{key:?}]");
    let value = match vars.str(template, &at) {
        Ok(v) => v,
        Err(e) => return Some(Err(e.to_string())),
    };
    Some(if crate::names::is_label_value(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{at}: {value:?} is not a label value (at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit)"
        ))
    })
}

/// Plans a reconcile of a run that waits for its turn: the
/// `PipelineRunQueued` condition saying why (`Unknown`), or, once its
/// pipeline timeout has passed since its creation, its failure as
/// `PipelineRunTimeout`.
pub fn queued(pr: &PipelineRun, wait: &concurrency::Wait, config: &Config, now: Timestamp) -> Plan {
    let mut st = pr.status.clone().unwrap_or_default();
    let before = st.clone();
    let run = Run::new(pr, now);
    let mut plan = Plan::default();
    let t = timeouts(pr, config);
    let since = pr
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(Duration::ZERO, |c| elapsed(c, now));
    if let Some(limit) = t.pipeline.filter(|_| config.queue_timeout_from_creation)
        && since >= limit
    {
        let failure = Failure::new(
            reason::TIMEOUT,
            format!(
                "PipelineRun {:?} failed to finish within {:?} (it was still queued: {})",
                run.name,
                go_duration(limit),
                wait.message()
            ),
        );
        fail(st, &mut plan, failure, now);
        return plan;
    }
    let message = wait.message();
    let same = Condition::succeeded(&st.conditions).is_some_and(|c| {
        c.reason.as_deref() == Some(concurrency::QUEUED) && c.message.as_deref() == Some(&message)
    });
    if !same {
        set_condition(
            &mut st.conditions,
            condition("Unknown", concurrency::QUEUED, message, now),
        );
    }
    plan.status = (st != before).then_some(st);
    let poll = Duration::from_secs(30);
    plan.requeue_after = Some(
        match t.pipeline.filter(|_| config.queue_timeout_from_creation) {
            Some(limit) => poll.min(limit.saturating_sub(since) + Duration::from_millis(100)),
            None => poll,
        },
    );
    plan
}

/// A run cancelled (or stopped) while queued for its concurrency key ends
/// at once as `Cancelled`: it never started, so no finally task runs.
fn cancelled_in_queue(run: &Run<'_>, st: &PipelineRunStatus) -> Option<Failure> {
    let queued = st.start_time.is_none()
        && st
            .concurrency
            .as_ref()
            .is_some_and(|c| c.admitted_time.is_none());
    let stopping = matches!(
        run.spec_status,
        "Cancelled" | "CancelledRunFinally" | "StoppedRunFinally"
    );
    (queued && stopping).then(|| {
        Failure::new(
            reason::CANCELLED,
            format!("PipelineRun {:?} was cancelled while queued", run.name),
        )
    })
}

/// A run that has not started and is asked to wait (`PipelineRunPending`):
/// its condition says so and nothing else happens. True while it waits.
fn hold_pending(run: &Run<'_>, st: &mut PipelineRunStatus) -> bool {
    if st.start_time.is_some() || run.spec_status != "PipelineRunPending" {
        return false;
    }
    // Admitted under its concurrency key but not started: it gives its
    // place back, and queues again once no longer pending.
    if let Some(c) = st.concurrency.as_mut() {
        c.admitted_time = None;
        c.wait_seconds = None;
    }
    set_condition(
        &mut st.conditions,
        condition(
            "Unknown",
            reason::PENDING,
            format!("PipelineRun {:?} is pending", run.name),
            run.now,
        ),
    );
    true
}

/// Starts the run the first time it is seen: its start time, the
/// `Started` condition and event.
fn start(run: &Run<'_>, st: &mut PipelineRunStatus, events: &mut Vec<Event>) {
    if st.start_time.is_some() {
        return;
    }
    st.start_time = Some(Time(run.now));
    set_condition(
        &mut st.conditions,
        condition("Unknown", reason::STARTED, "", run.now),
    );
    events.push(Event {
        type_: "Normal",
        reason: reason::STARTED.into(),
        message: String::new(),
    });
}

/// Ends the run as failed: the `Succeeded` condition False with the
/// failure's reason and message, the completion time, a warning event.
fn fail(mut st: PipelineRunStatus, plan: &mut Plan, failure: Failure, now: Timestamp) {
    set_condition(
        &mut st.conditions,
        condition("False", failure.reason, failure.message.clone(), now),
    );
    st.completion_time = Some(Time(now));
    plan.events.push(Event {
        type_: "Warning",
        reason: failure.reason.into(),
        message: failure.message,
    });
    plan.requeue_after = None;
    plan.status = Some(st);
}

/// A child TaskRun still running that nobody has asked to stop.
fn cancellable(tr: &TaskRun) -> bool {
    cond(tr).is_none_or(|c| c.status == "Unknown") && tr.spec.status.is_none()
}

/// A run cancelled outright (`Cancelled`): its running TaskRuns are
/// cancelled and it fails at once.
fn cancel(run: &Run<'_>, children: &[TaskRun], cancel: &mut Vec<(String, String)>) -> Failure {
    for c in children.iter().filter(|c| cancellable(c)) {
        cancel.push((
            c.metadata.name.clone().unwrap_or_default(),
            CANCELLED_MESSAGE.into(),
        ));
    }
    Failure::new(
        reason::CANCELLED,
        format!("PipelineRun {:?} was cancelled", run.name),
    )
}

/// Where each pipeline task stands: its TaskRuns (by
/// `tekton.dev/pipelineTask`, in name order) and their state; DAG tasks
/// first, then finally tasks, each in spec order.
fn observe<'a>(
    spec: &'a PipelineSpec,
    raw: &'a PipelineSpec,
    children: &'a [TaskRun],
) -> Vec<Task<'a>> {
    let mut by_task: HashMap<&str, Vec<&TaskRun>> = HashMap::new();
    for c in children {
        if let Some(t) = label(c, "tekton.dev/pipelineTask") {
            by_task.entry(t).or_default().push(c);
        }
    }
    let dag = spec
        .tasks
        .iter()
        .zip(&raw.tasks)
        .map(|(pt, raw)| (pt, raw, false));
    let finally = spec
        .finally
        .iter()
        .zip(&raw.finally)
        .map(|(pt, raw)| (pt, raw, true));
    dag.chain(finally)
        .map(|(pt, raw, finally)| {
            let mut children: Vec<&TaskRun> = by_task.remove(pt.name.as_str()).unwrap_or_default();
            children.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            let state = child_state(&children);
            Task {
                pt,
                raw,
                finally,
                children,
                state,
            }
        })
        .collect()
}

/// Where the run stands against its timeouts at this reconcile.
struct Clock {
    timeouts: Timeouts,
    since_start: Duration,
    /// The pipeline timeout passed: the run fails.
    pipeline_timed_out: bool,
    /// The tasks timeout passed, before or since finally started.
    tasks_deadline_passed: bool,
    /// The tasks timeout passed before finally started: DAG tasks stop.
    tasks_timed_out: bool,
    /// Finally started and its timeout passed: finally tasks stop.
    finally_timed_out: bool,
}

impl Clock {
    fn read(pr: &PipelineRun, config: &Config, st: &PipelineRunStatus, now: Timestamp) -> Clock {
        let t = timeouts(pr, config);
        let start = timing_start(pr, config, st).unwrap_or(Time(now));
        let since_start = elapsed(&start, now);
        let tasks_deadline_passed = t.tasks.is_some_and(|d| since_start >= d);
        Clock {
            pipeline_timed_out: t.pipeline.is_some_and(|p| since_start >= p),
            tasks_deadline_passed,
            tasks_timed_out: st.finally_start_time.is_none() && tasks_deadline_passed,
            finally_timed_out: st
                .finally_start_time
                .as_ref()
                .is_some_and(|fs| t.finally.is_some_and(|d| elapsed(fs, now) >= d)),
            timeouts: t,
            since_start,
        }
    }
}

/// Names of the TaskRuns of `tasks` that can still be cancelled.
fn running(tasks: &[Task<'_>]) -> Vec<String> {
    tasks
        .iter()
        .flat_map(|t| t.children.iter())
        .filter(|c| cancellable(c))
        .filter_map(|c| c.metadata.name.clone())
        .collect()
}

/// Stops `tasks` that ran out of time: their running TaskRuns are
/// cancelled, those not started are skipped for `why`.
fn stop(tasks: &mut [Task<'_>], why: &'static str, cancel: &mut Vec<(String, String)>) {
    for n in running(tasks) {
        cancel.push((n, TIMED_OUT_MESSAGE.into()));
    }
    for task in tasks.iter_mut().filter(|t| t.state == State::NotStarted) {
        task.state = State::Skipped(why);
    }
}

/// The pipeline timeout passed: every task is stopped, the child
/// references and skipped tasks recorded, and the run fails.
fn time_out(
    run: &Run<'_>,
    clock: &Clock,
    tasks: &mut [Task<'_>],
    st: &mut PipelineRunStatus,
    cancel: &mut Vec<(String, String)>,
) -> Failure {
    stop(tasks, reason::SKIP_TIMEOUT, cancel);
    st.child_references = child_references(tasks, &[]);
    st.skipped_tasks = skipped_tasks(tasks);
    Failure::new(
        reason::TIMEOUT,
        format!(
            "PipelineRun {:?} failed to finish within {:?}",
            run.name,
            go_duration(clock.timeouts.pipeline.unwrap_or_default())
        ),
    )
}

/// Stops the DAG tasks when the tasks timeout passed before finally, and
/// the finally tasks when their own timeout passed.
fn stop_timed_out(
    clock: &Clock,
    tasks: &mut [Task<'_>],
    n_dag: usize,
    cancel: &mut Vec<(String, String)>,
) {
    if clock.tasks_timed_out {
        stop(&mut tasks[..n_dag], reason::SKIP_TASKS_TIMEOUT, cancel);
    }
    if clock.finally_timed_out {
        stop(&mut tasks[n_dag..], reason::SKIP_FINALLY_TIMEOUT, cancel);
    }
}

/// A run cancelled with `CancelledRunFinally`: while DAG tasks still run,
/// every running TaskRun is cancelled (finally tasks run once the DAG is
/// done).
fn cancel_for_finally(tasks: &[Task<'_>], n_dag: usize, cancel: &mut Vec<(String, String)>) {
    if tasks[..n_dag].iter().any(|t| t.state == State::Running) {
        for n in running(tasks) {
            cancel.push((n, CANCELLED_MESSAGE.into()));
        }
    }
}

/// What one reconcile does with a pipeline task.
enum Decision {
    /// Nothing yet: it has started, or what it waits for is not done.
    Wait,
    /// Skip it, for this reason.
    Skip(&'static str),
    /// A task that succeeded did not emit a result it references: the run
    /// fails validation.
    Invalid(String),
    /// Start it: its TaskRun(s) from the pipeline task with results
    /// applied.
    Run(Box<PipelineTask>),
}

/// Why DAG tasks that could start are skipped instead, if they are: a DAG
/// task failed (without `onError: continue`) or is invalid, or the run is
/// gracefully cancelled or stopped.
fn stop_reason(dag: &[Task<'_>], spec_status: &str) -> Option<&'static str> {
    let stopping = dag.iter().any(|t| {
        (matches!(t.state, State::Failed { .. }) && !on_error_continue(t.pt))
            || matches!(t.state, State::Invalid(_))
    });
    if stopping {
        Some(reason::SKIP_STOPPING)
    } else if spec_status == "CancelledRunFinally" {
        Some(reason::SKIP_GRACEFUL_CANCEL)
    } else if spec_status == "StoppedRunFinally" {
        Some(reason::SKIP_GRACEFUL_STOP)
    } else {
        None
    }
}

/// Task-result variables for one pass over the DAG, made when first
/// needed: results only change between passes (a task's results appear
/// when it ends, which no pass does).
struct PassVars<'v> {
    base: &'v Vars,
    vars: Option<Vars>,
}

impl PassVars<'_> {
    fn get(&mut self, tasks: &[Task<'_>]) -> &Vars {
        self.vars
            .get_or_insert_with(|| result_vars(tasks, self.base, None))
    }
}

/// Decides the DAG tasks, pass after pass until nothing changes: a task
/// decided in one pass lets its dependents be decided in the same
/// reconcile (skips cascade).
fn decide_dag(
    tasks: &mut [Task<'_>],
    n_dag: usize,
    pipeline: &Pipeline<'_>,
    spec_status: &str,
    launcher: &mut Launcher<'_>,
    plan: &mut Plan,
) -> Result<(), Failure> {
    let graph = &pipeline.graph;
    loop {
        let stop = stop_reason(&tasks[..n_dag], spec_status);
        let mut rvars = PassVars {
            base: &pipeline.vars,
            vars: None,
        };
        let mut changed = false;
        for &i in &graph.order {
            let decision = decide_dag_task(tasks, i, &graph.deps[i], stop, &mut rvars);
            changed |= launcher.apply(decision, &mut tasks[i], plan)?;
        }
        if !changed {
            return Ok(());
        }
    }
}

/// Decides DAG task `i`: wait while it has started or its dependencies are
/// not done; skip it when the run is stopping, its `when` is false, a
/// parent was skipped (other than by its own `when`), or results it needs
/// are missing; invalid when a task that succeeded did not emit one; else
/// run it.
fn decide_dag_task(
    tasks: &[Task<'_>],
    i: usize,
    deps: &[usize],
    stop: Option<&'static str>,
    rvars: &mut PassVars<'_>,
) -> Decision {
    let task = &tasks[i];
    if task.state != State::NotStarted || !deps.iter().all(|&d| tasks[d].state.done()) {
        return Decision::Wait;
    }
    if let Some(r) = stop {
        return Decision::Skip(r);
    }
    let rvars = rvars.get(tasks);
    if !when_allows(&task.raw.when, rvars) {
        return Decision::Skip(reason::SKIP_WHEN);
    }
    if deps
        .iter()
        .any(|&d| matches!(tasks[d].state, State::Skipped(r) if r != reason::SKIP_WHEN))
    {
        return Decision::Skip(reason::SKIP_PARENT);
    }
    match resolve_task(task, rvars, tasks) {
        Err(Unresolved::Skip) => Decision::Skip(reason::SKIP_RESULTS),
        Err(Unresolved::Invalid(m)) => Decision::Invalid(m),
        Ok(resolved) => run_unless_empty(resolved),
    }
}

/// Runs a resolved pipeline task, unless its matrix has an empty array.
fn run_unless_empty(resolved: PipelineTask) -> Decision {
    if resolved
        .matrix
        .as_ref()
        .is_some_and(matrix::has_empty_array)
    {
        Decision::Skip(reason::SKIP_EMPTY_MATRIX)
    } else {
        Decision::Run(Box::new(resolved))
    }
}

/// Once every DAG task is done: the finally start time, then each finally
/// task decided over the DAG tasks' results and statuses.
fn decide_finally(
    tasks: &mut [Task<'_>],
    n_dag: usize,
    vars: &Vars,
    now: Timestamp,
    st: &mut PipelineRunStatus,
    launcher: &mut Launcher<'_>,
    plan: &mut Plan,
) -> Result<(), Failure> {
    let dag_done = tasks[..n_dag].iter().all(|t| t.state.done());
    if !dag_done || n_dag == tasks.len() {
        return Ok(());
    }
    if st.finally_start_time.is_none() {
        st.finally_start_time = Some(Time(now));
    }
    let fvars = result_vars(tasks, vars, Some(n_dag));
    for i in n_dag..tasks.len() {
        let decision = decide_finally_task(&tasks[i], &fvars, tasks);
        launcher.apply(decision, &mut tasks[i], plan)?;
    }
    Ok(())
}

/// Decides a finally task: wait once it has started; skip it when results
/// it needs are missing, its `when` is false or its matrix empty; else run
/// it.
fn decide_finally_task(task: &Task<'_>, fvars: &Vars, tasks: &[Task<'_>]) -> Decision {
    if task.state != State::NotStarted {
        return Decision::Wait;
    }
    match resolve_task(task, fvars, tasks) {
        Err(_) => Decision::Skip(reason::SKIP_RESULTS),
        Ok(_) if !when_allows(&task.raw.when, fvars) => Decision::Skip(reason::SKIP_WHEN),
        Ok(resolved) => run_unless_empty(resolved),
    }
}

/// Starts pipeline tasks of one run: what their TaskRuns are made from.
struct Launcher<'a> {
    pr: &'a PipelineRun,
    pipeline_label: &'a str,
    /// Specs of the Tasks the pipeline refers to by name.
    specs: &'a BTreeMap<String, TaskSpec>,
    config: &'a Config,
    /// A task started binds a `volumeClaimTemplate` workspace: the run's
    /// claims are needed.
    claims_needed: bool,
    /// How many more pipeline tasks may start (`tektite.dev/max-parallel-tasks`
    /// less those running); `None`: no limit.
    slots: Option<usize>,
}

impl Launcher<'_> {
    /// Carries out a decision: the task's new state; for `Run` its TaskRuns
    /// in the plan, for `Invalid` a warning event. False when nothing
    /// changed: `Wait`, or `Run` while no slot is free (the task waits).
    fn apply(
        &mut self,
        decision: Decision,
        task: &mut Task<'_>,
        plan: &mut Plan,
    ) -> Result<bool, Failure> {
        match decision {
            Decision::Wait => return Ok(false),
            Decision::Run(_) if self.slots == Some(0) => return Ok(false),
            Decision::Skip(why) => task.state = State::Skipped(why),
            Decision::Invalid(m) => {
                plan.events.push(Event {
                    type_: "Warning",
                    reason: "ResultValidationFailed".into(),
                    message: format!("Task {:?} failed result validation: {m}", task.pt.name),
                });
                task.state = State::Invalid(m);
            }
            Decision::Run(resolved) => {
                let trs = make_task_runs(
                    self.pr,
                    &resolved,
                    task.finally,
                    self.pipeline_label,
                    self.specs,
                    self.config,
                )?;
                self.claims_needed |= uses_claim_template(self.pr, &resolved);
                plan.create.extend(trs);
                task.state = State::Running;
                self.slots = self.slots.map(|n| n - 1);
            }
        }
        Ok(true)
    }
}

/// Records where the run stands: child references, skipped tasks and the
/// `Succeeded` condition; when it has ended, [`finish`]; else when to look
/// again.
fn record_status(
    run: &Run<'_>,
    spec: &PipelineSpec,
    tasks: &[Task<'_>],
    n_dag: usize,
    clock: &Clock,
    st: &mut PipelineRunStatus,
    plan: &mut Plan,
) {
    st.child_references = child_references(tasks, &plan.create);
    st.skipped_tasks = skipped_tasks(tasks);
    let (status, why, message) = overall(
        tasks,
        n_dag,
        run.spec_status,
        &run.name,
        clock.tasks_deadline_passed,
        clock.timeouts.tasks,
    );
    set_condition(&mut st.conditions, condition(status, why, message, run.now));
    if status != "Unknown" {
        finish(run, spec, tasks, st, plan);
    } else {
        plan.requeue_after = requeue(
            &clock.timeouts,
            clock.since_start,
            st.finally_start_time.as_ref(),
            run.now,
        );
    }
}

/// Ends the run: its completion time, its results (a result that refers to
/// one a succeeded task did not emit fails it) and the end event.
fn finish(
    run: &Run<'_>,
    spec: &PipelineSpec,
    tasks: &[Task<'_>],
    st: &mut PipelineRunStatus,
    plan: &mut Plan,
) {
    st.completion_time = Some(Time(run.now));
    let invalid = pipeline_results(st, spec, tasks);
    if !invalid.is_empty() {
        let m = format!(
            "Failed to get PipelineResult from TaskRun Results for PipelineRun {}: invalid pipelineresults [{}], \
             the referenced results don't exist",
            run.name,
            invalid.join(" ")
        );
        set_condition(
            &mut st.conditions,
            condition("False", reason::COULDNT_GET_RESULT, m, run.now),
        );
    }
    plan.events.push(crate::status::end_event(&st.conditions));
    plan.requeue_after = None;
}

fn label<'a>(tr: &'a TaskRun, key: &str) -> Option<&'a str> {
    tr.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// The next deadline that has not passed yet: the tasks timeout (before
/// finally), the finally timeout (during finally), the pipeline timeout.
fn requeue(
    t: &Timeouts,
    since_start: Duration,
    finally_start: Option<&Time>,
    now: Timestamp,
) -> Option<Duration> {
    let mut next: Vec<Duration> = Vec::new();
    let mut ahead = |total: Option<Duration>, spent: Duration| {
        if let Some(left) = total
            .and_then(|d| d.checked_sub(spent))
            .filter(|d| !d.is_zero())
        {
            next.push(left);
        }
    };
    ahead(t.pipeline, since_start);
    match finally_start {
        None => ahead(t.tasks, since_start),
        Some(fs) => ahead(t.finally, elapsed(fs, now)),
    }
    next.into_iter().min()
}
