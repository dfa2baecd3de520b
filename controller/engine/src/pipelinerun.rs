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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use tektite_api::dag::{self, Dag};
use tektite_api::param::ParamValue;
use tektite_api::v1::{
    ChildStatusReference, Condition, Param, PipelineRun, PipelineRunResult, PipelineRunStatus,
    PipelineSpec, PipelineTask, PipelineTaskRunSpec, PodTemplate, SkippedTask, TaskRun,
    TaskRunSpec, TaskSpec, WhenExpression, WorkspaceBinding,
};
use tektite_entrypoint::contract as ep;

use crate::matrix;
use crate::names;
use crate::params::{self, Failure};
use crate::pod::{Config, go_duration};
use crate::status::{ON_ERROR_ANNOTATION, condition, is_done, set_condition};
use crate::subst::Vars;
use crate::taskrun::Event;

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

/// Plans one reconcile of a PipelineRun: nothing once it is done; a
/// pending run only says so; otherwise it starts (once) and goes through
/// its phases ([`advance`]), any of which may fail it.
pub fn reconcile(obs: Observed<'_>, config: &Config) -> Plan {
    let mut st = obs.run.status.clone().unwrap_or_default();
    if is_done(&st.conditions) {
        return Plan::default();
    }
    let before = st.clone();
    let run = Run::new(obs.run, obs.now);
    let mut plan = Plan::default();
    let outcome = if hold_pending(&run, &mut st) {
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

    let mut tasks = observe(&pipeline.spec, pipeline.raw, obs.children);
    let n_dag = pipeline.spec.tasks.len();

    let clock = Clock::read(run.pr, config, st, run.now);
    if clock.pipeline_timed_out {
        return Err(time_out(run, &clock, &mut tasks, st, &mut plan.cancel));
    }
    stop_timed_out(&clock, &mut tasks, n_dag, &mut plan.cancel);
    if run.spec_status == "CancelledRunFinally" {
        cancel_for_finally(&tasks, n_dag, &mut plan.cancel);
    }

    let mut launcher = Launcher {
        pr: run.pr,
        pipeline_label: &pipeline.label,
        specs: obs.tasks,
        config,
        claims_needed: false,
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

/// A run that has not started and is asked to wait (`PipelineRunPending`):
/// its condition says so and nothing else happens. True while it waits.
fn hold_pending(run: &Run<'_>, st: &mut PipelineRunStatus) -> bool {
    if st.start_time.is_some() || run.spec_status != "PipelineRunPending" {
        return false;
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

/// The pipeline a run goes ahead with, once checked against the run.
struct Pipeline<'a> {
    /// As written: what pipeline tasks are resolved from for their
    /// TaskRuns.
    raw: &'a PipelineSpec,
    /// With the run's params and context applied.
    spec: PipelineSpec,
    /// `tekton.dev/pipeline`: the Pipeline's name, else the run's.
    label: String,
    /// The run's params, context and `workspaces.<w>.bound`.
    vars: Vars,
    graph: Dag,
}

impl<'a> Pipeline<'a> {
    /// Checks the run against its pipeline, the first problem failing the
    /// run (resolution, params, bindings, tasks), and applies the run's
    /// params and context to it.
    fn check(
        run: &Run<'_>,
        resolved: Result<(&'a PipelineSpec, Option<&'a str>), &Failure>,
        specs: &BTreeMap<String, TaskSpec>,
    ) -> Result<Pipeline<'a>, Failure> {
        let (raw, name) = resolved.map_err(|f| {
            Failure::new(
                reason::COULDNT_GET_PIPELINE,
                format!(
                    "Error retrieving pipeline for pipelinerun {}/{}: {}",
                    run.ns, run.name, f.message
                ),
            )
        })?;
        let label = name.unwrap_or(&run.name).to_string();
        let pl = format!("{}/{label}", run.ns);
        let me = format!("{}/{}", run.ns, run.name);
        let values = check_params(run.pr, raw, &me, &pl)?;
        check_bindings(run.pr, raw, &me, &pl)?;
        let graph = check_tasks(raw, specs, &me, &pl)?;
        let vars = pipeline_vars(run, raw, &values, &label);
        let spec = substitute_pipeline(raw, &vars).map_err(|e| {
            Failure::new(
                reason::VALIDATION_FAILED,
                format!("Failed to apply parameters to Pipeline {pl}: {e}"),
            )
        })?;
        Ok(Pipeline {
            raw,
            spec,
            label,
            vars,
            graph,
        })
    }
}

/// The run's param values for its pipeline (a run's object replaces the
/// default object whole); fails on params missing, of the wrong type, or
/// objects missing keys.
fn check_params(
    pr: &PipelineRun,
    spec: &PipelineSpec,
    me: &str,
    pl: &str,
) -> Result<BTreeMap<String, ParamValue>, Failure> {
    let given: BTreeMap<&str, &ParamValue> = pr
        .spec
        .params
        .iter()
        .map(|p| (p.name.as_str(), &p.value))
        .collect();
    let missing: Vec<&str> = spec
        .params
        .iter()
        .filter(|p| p.default.is_none() && !given.contains_key(p.name.as_str()))
        .map(|p| p.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Failure::new(
            reason::PARAMETER_MISSING,
            format!(
                "[User error] PipelineRun {me} is missing some parameters required by Pipeline {pl}: \
                 pipelineRun missing parameters: [{}]",
                missing.join(" ")
            ),
        ));
    }
    let mismatched: Vec<&str> = spec
        .params
        .iter()
        .filter(|p| {
            given.get(p.name.as_str()).is_some_and(|v| {
                v.kind() != params::declared_kind(p)
                    && !matches!(v, ParamValue::String(s) if s.starts_with("$("))
            })
        })
        .map(|p| p.name.as_str())
        .collect();
    if !mismatched.is_empty() {
        return Err(Failure::new(
            reason::PARAMETER_TYPE_MISMATCH,
            format!(
                "PipelineRun {me} parameters have mismatching types with Pipeline {pl}'s parameters: \
                 parameters have inconsistent types : [{}]",
                mismatched.join(" ")
            ),
        ));
    }
    params::resolve(
        &spec.params,
        &pr.spec.params,
        false,
        reason::OBJECT_KEYS_MISSING,
        &format!("Pipeline {pl}"),
    )
    .map_err(|f| {
        let r = if f.reason == "InvalidParamValue" {
            "InvalidParamValue"
        } else {
            reason::OBJECT_KEYS_MISSING
        };
        Failure::new(
            r,
            format!(
                "PipelineRun {me} parameters is missing object keys required by Pipeline {pl}'s parameters: {}",
                f.message
            ),
        )
    })
}

/// The run binds every workspace the pipeline requires, and its
/// `taskRunSpecs` name only pipeline tasks that exist.
fn check_bindings(
    pr: &PipelineRun,
    spec: &PipelineSpec,
    me: &str,
    pl: &str,
) -> Result<(), Failure> {
    for w in &spec.workspaces {
        if !w.optional && !pr.spec.workspaces.iter().any(|b| b.name == w.name) {
            return Err(Failure::new(
                reason::INVALID_WORKSPACE_BINDINGS,
                format!(
                    "PipelineRun {me} doesn't bind Pipeline {pl}'s Workspaces correctly: \
                     pipeline requires workspace with name {:?} be provided by pipelinerun",
                    w.name
                ),
            ));
        }
    }
    for s in &pr.spec.task_run_specs {
        if !spec
            .tasks
            .iter()
            .chain(&spec.finally)
            .any(|t| t.name == s.pipeline_task_name)
        {
            return Err(Failure::new(
                reason::INVALID_TASK_RUN_SPECS,
                format!(
                    "PipelineRun {me} doesn't define taskRunSpecs correctly: pipelineRun's taskrunSpecs \
                     defined wrong taskName: {:?}, does not exist in Pipeline",
                    s.pipeline_task_name
                ),
            ));
        }
    }
    Ok(())
}

/// The pipeline's tasks can run: no CEL `when`, a DAG without cycles, and
/// every Task referenced by name exists. Returns the DAG.
fn check_tasks(
    spec: &PipelineSpec,
    specs: &BTreeMap<String, TaskSpec>,
    me: &str,
    pl: &str,
) -> Result<Dag, Failure> {
    let all_tasks = || spec.tasks.iter().chain(&spec.finally);
    if let Some(t) = all_tasks().find(|t| t.when.iter().any(|w| w.cel.is_some())) {
        return Err(Failure::new(
            reason::VALIDATION_FAILED,
            format!(
                "Pipeline {pl} can't be Run; it has an invalid spec: pipeline task {:?} uses a CEL \
                 `when` expression, which Tektite does not evaluate (in Tekton it is the alpha \
                 feature enable-cel-in-whenexpression)",
                t.name
            ),
        ));
    }
    let graph = dag::build(&spec.tasks).map_err(|e| {
        Failure::new(
            reason::INVALID_GRAPH,
            format!("PipelineRun {me}'s Pipeline DAG is invalid: {e}"),
        )
    })?;
    let missing_tasks: BTreeSet<String> = all_tasks()
        .filter_map(|t| t.task_ref.as_ref()?.name.clone())
        .filter(|n| !specs.contains_key(n))
        .collect();
    if let Some(n) = missing_tasks.first() {
        return Err(Failure::new(
            reason::COULDNT_GET_TASK,
            format!(
                "Pipeline {pl} can't be Run; it contains Tasks that don't exist: Couldn't retrieve Task {n:?}: \
                 tasks.tekton.dev {n:?} not found"
            ),
        ));
    }
    Ok(graph)
}

/// Pipeline-level variables: params, `context.pipelineRun.*`,
/// `context.pipeline.name`, `workspaces.<w>.bound`.
fn pipeline_vars(
    run: &Run<'_>,
    spec: &PipelineSpec,
    values: &BTreeMap<String, ParamValue>,
    pipeline_label: &str,
) -> Vars {
    let pr = run.pr;
    let mut vars = Vars::new(&["params.", "context.pipelineRun.", "context.pipeline."]);
    params::add_to(&mut vars, values);
    vars.set_str("context.pipelineRun.name", &run.name);
    vars.set_str("context.pipelineRun.namespace", &run.ns);
    vars.set_str(
        "context.pipelineRun.uid",
        pr.metadata.uid.clone().unwrap_or_default(),
    );
    vars.set_str("context.pipeline.name", pipeline_label);
    for w in &spec.workspaces {
        let bound = pr.spec.workspaces.iter().any(|b| b.name == w.name);
        vars.set_str(format!("workspaces.{}.bound", w.name), bound.to_string());
    }
    vars
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
        let start = st.start_time.clone().unwrap_or(Time(now));
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
            if let Decision::Wait = decision {
                continue;
            }
            launcher.apply(decision, &mut tasks[i], plan)?;
            changed = true;
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
        if let Decision::Wait = decision {
            continue;
        }
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
}

impl Launcher<'_> {
    /// Carries out a decision: the task's new state; for `Run` its TaskRuns
    /// in the plan, for `Invalid` a warning event.
    fn apply(
        &mut self,
        decision: Decision,
        task: &mut Task<'_>,
        plan: &mut Plan,
    ) -> Result<(), Failure> {
        match decision {
            Decision::Wait => {}
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
            }
        }
        Ok(())
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

/// The `Succeeded` condition from the tasks' states (Tekton's counting):
/// Unknown while tasks remain, then a timeout, a validation failure, a
/// failure, a cancellation, or success.
fn overall(
    tasks: &[Task<'_>],
    n_dag: usize,
    spec_status: &str,
    name: &str,
    tasks_deadline_passed: bool,
    tasks_timeout: Option<Duration>,
) -> (&'static str, &'static str, String) {
    let tally = Tally::of(tasks);
    let finally_done = tasks[n_dag..].iter().all(|t| t.state.done());
    if tally.incomplete > 0 {
        let why = if tasks_deadline_passed && n_dag < tasks.len() && !finally_done {
            reason::TIMEOUT_RUNNING_FINALLY
        } else if spec_status == "CancelledRunFinally" {
            reason::CANCELLED_RUNNING_FINALLY
        } else if spec_status == "StoppedRunFinally" {
            reason::STOPPED_RUNNING_FINALLY
        } else if tally.cancelled > 0 || (tally.failed > 0 && finally_done) {
            reason::STOPPING
        } else {
            reason::RUNNING
        };
        return ("Unknown", why, tally.running_message());
    }
    if tasks_deadline_passed && finally_done {
        return (
            "False",
            reason::TIMEOUT,
            format!(
                "PipelineRun {name:?} failed due to tasks failed to finish within {:?}",
                go_duration(tasks_timeout.unwrap_or_default())
            ),
        );
    }
    let msg = tally.done_message();
    if !tally.invalid.is_empty() {
        return ("False", reason::VALIDATION_FAILED, msg);
    }
    if tally.failed > 0 || tally.skipped_timeout > 0 {
        return ("False", reason::FAILED, msg);
    }
    if spec_status == "CancelledRunFinally" || spec_status == "StoppedRunFinally" {
        return (
            "False",
            reason::CANCELLED,
            format!("PipelineRun {name:?} was cancelled"),
        );
    }
    if tally.cancelled > 0 {
        return ("False", reason::CANCELLED, msg);
    }
    let why = if tally.skipped > 0 {
        reason::COMPLETED
    } else {
        reason::SUCCEEDED
    };
    ("True", why, msg)
}

/// How many tasks stand where, counted as Tekton counts them.
#[derive(Default)]
struct Tally {
    succeeded: usize,
    /// Failed, or timed out by the run.
    failed: usize,
    /// Failed with `onError: continue`.
    ignored: usize,
    cancelled: usize,
    skipped: usize,
    /// Skipped because a timeout passed.
    skipped_timeout: usize,
    /// Not started or running.
    incomplete: usize,
    /// Tasks that failed result validation: name and message, in order.
    invalid: Vec<(String, String)>,
}

impl Tally {
    fn of(tasks: &[Task<'_>]) -> Tally {
        let mut tally = Tally::default();
        for t in tasks {
            match &t.state {
                State::Succeeded => tally.succeeded += 1,
                State::Failed {
                    timed_out: true, ..
                } => tally.failed += 1,
                State::Failed {
                    cancelled: true, ..
                } => tally.cancelled += 1,
                State::Failed { .. } if on_error_continue(t.pt) => tally.ignored += 1,
                State::Failed { .. } => tally.failed += 1,
                State::Invalid(m) => tally.invalid.push((t.pt.name.clone(), m.clone())),
                State::Skipped(r) => {
                    tally.skipped += 1;
                    let timeouts = [
                        reason::SKIP_TIMEOUT,
                        reason::SKIP_TASKS_TIMEOUT,
                        reason::SKIP_FINALLY_TIMEOUT,
                    ];
                    if timeouts.contains(r) {
                        tally.skipped_timeout += 1;
                    }
                }
                State::NotStarted | State::Running => tally.incomplete += 1,
            }
        }
        tally.invalid.sort();
        tally
    }

    fn completed(&self) -> usize {
        self.succeeded + self.failed + self.cancelled + self.ignored
    }

    /// `Tasks Completed: N (Failed: F, Cancelled C), Incomplete: I, Skipped: S`.
    fn running_message(&self) -> String {
        format!(
            "Tasks Completed: {} (Failed: {}, Cancelled {}), Incomplete: {}, Skipped: {}",
            self.completed(),
            self.failed,
            self.cancelled,
            self.incomplete,
            self.skipped
        )
    }

    /// `Tasks Completed: N (Failed: F[ (Ignored: I)], Cancelled C), Skipped:
    /// S`, then `, Failed Validation: V (messages)` when tasks are invalid.
    fn done_message(&self) -> String {
        let (completed, cancelled, skipped) = (self.completed(), self.cancelled, self.skipped);
        let total_failed = self.failed + self.ignored;
        let mut msg = if self.ignored > 0 {
            format!(
                "Tasks Completed: {completed} (Failed: {total_failed} (Ignored: {}), Cancelled {cancelled}), Skipped: {skipped}",
                self.ignored
            )
        } else {
            format!(
                "Tasks Completed: {completed} (Failed: {total_failed}, Cancelled {cancelled}), Skipped: {skipped}"
            )
        };
        if !self.invalid.is_empty() {
            let joined: Vec<&str> = self.invalid.iter().map(|(_, m)| m.as_str()).collect();
            msg.push_str(&format!(
                ", Failed Validation: {} ({})",
                self.invalid.len(),
                joined.join("; ")
            ));
        }
        msg
    }
}

/// The results of done tasks (`tasks.<t>.results.<r>`, matrix results
/// gathered into arrays) and, for finally tasks (`finally_from` = the
/// number of DAG tasks), `tasks.<t>.status|reason` and `tasks.status`.
fn result_vars(tasks: &[Task<'_>], base: &Vars, finally_from: Option<usize>) -> Vars {
    let mut v = base.clone();
    v.strict("tasks.");
    for t in tasks {
        if matches!(t.state, State::Succeeded | State::Failed { .. }) {
            add_results(&mut v, t);
        }
    }
    for t in tasks {
        if let Some(m) = &t.pt.matrix
            && let Ok(c) = matrix::fan_out(m)
        {
            v.set_str(
                format!("tasks.{}.matrix.length", t.pt.name),
                c.len().to_string(),
            );
        }
    }
    if let Some(n) = finally_from {
        add_statuses(&mut v, &tasks[..n]);
    }
    v
}

/// A done task's results; a matrixed task's gathered into arrays, with
/// `tasks.<t>.matrix.<r>.length`.
fn add_results(v: &mut Vars, t: &Task<'_>) {
    let matrixed = t.pt.matrix.is_some();
    let mut gathered: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in &t.children {
        for r in c.status.iter().flat_map(|s| &s.results) {
            if matrixed {
                if let ParamValue::String(s) = &r.value {
                    gathered.entry(r.name.clone()).or_default().push(s.clone());
                }
            } else {
                v.set(
                    format!("tasks.{}.results.{}", t.pt.name, r.name),
                    r.value.clone(),
                );
            }
        }
    }
    for (r, vals) in gathered {
        v.set_str(
            format!("tasks.{}.matrix.{r}.length", t.pt.name),
            vals.len().to_string(),
        );
        v.set(
            format!("tasks.{}.results.{r}", t.pt.name),
            ParamValue::Array(vals),
        );
    }
}

/// What finally tasks see of the DAG tasks: `tasks.<t>.status` and
/// `tasks.<t>.reason` of each, and `tasks.status` of them all.
fn add_statuses(v: &mut Vars, dag: &[Task<'_>]) {
    let mut any_failed = false;
    let mut any_skipped = false;
    for t in dag {
        let status = match t.state {
            State::Succeeded => "Succeeded",
            State::Failed { .. } | State::Invalid(_) => {
                any_failed = true;
                "Failed"
            }
            _ => {
                any_skipped = true;
                "None"
            }
        };
        v.set_str(format!("tasks.{}.status", t.pt.name), status);
        let reason = t
            .children
            .iter()
            .filter_map(|c| cond(c))
            .find(|c| c.status != "True")
            .or_else(|| t.children.first().and_then(|c| cond(c)))
            .and_then(|c| c.reason.clone())
            .unwrap_or_default();
        v.set_str(format!("tasks.{}.reason", t.pt.name), reason);
    }
    let all = if any_failed {
        "Failed"
    } else if any_skipped {
        "Completed"
    } else {
        "Succeeded"
    };
    v.set_str("tasks.status", all);
}

fn when_allows(when: &[WhenExpression], vars: &Vars) -> bool {
    when.iter().all(|w| {
        let input = vars
            .str(w.input.as_deref().unwrap_or(""), "when")
            .unwrap_or_else(|_| w.input.clone().unwrap_or_default());
        let values = vars
            .array(&w.values, "when")
            .unwrap_or_else(|_| w.values.clone());
        let found = values.contains(&input);
        match w.operator.as_deref() {
            Some("notin") => !found,
            _ => found,
        }
    })
}

enum Unresolved {
    /// Results of a task that was skipped, or that failed: skip the consumer.
    Skip,
    /// A task that succeeded did not emit a referenced result.
    Invalid(String),
}

/// The PipelineTask with its task results (and finally variables) substituted.
fn resolve_task(
    task: &Task<'_>,
    vars: &Vars,
    tasks: &[Task<'_>],
) -> Result<PipelineTask, Unresolved> {
    // Substituted from the task as written; judged (onError) as the
    // Pipeline's params made it.
    let pt = task.pt;
    let mut j = serde_json::to_value(task.raw).map_err(|_| Unresolved::Skip)?;
    let fields = [
        "params",
        "matrix",
        "when",
        "displayName",
        "workspaces",
        "taskRef",
        "onError",
    ];
    for f in fields {
        if let Some(x) = j.get_mut(f) {
            let r = match f {
                "params" | "matrix" => substitute_params(x, vars),
                "taskRef" => substitute_task_ref(x, vars),
                _ => vars.json(x, f, &["name"]).map_err(|e| e.to_string()),
            };
            if let Err(e) = r {
                return Err(classify(&e, pt, tasks));
            }
        }
    }
    if let Some(spec) = j.get_mut("taskSpec") {
        // An inline spec also refers to its own params and results: only
        // task results and finally variables are applied here.
        let mut lenient = vars.clone();
        lenient.clear_strict();
        lenient.strict("tasks.");
        if let Err(e) = lenient.json(spec, "taskSpec", &["name"]) {
            return Err(classify(&e.to_string(), pt, tasks));
        }
    }
    serde_json::from_value(j).map_err(|_| Unresolved::Skip)
}

/// A taskRef's name, and its (resolver) params keeping their types.
fn substitute_task_ref(r: &mut serde_json::Value, vars: &Vars) -> Result<(), String> {
    if let Some(serde_json::Value::String(n)) = r.get_mut("name") {
        *n = vars.str(n, "taskRef.name").map_err(|e| e.to_string())?;
    }
    match r.get_mut("params") {
        Some(p) => substitute_params(p, vars),
        None => Ok(()),
    }
}

/// Params keep their types: a whole `$(tasks.t.results.r[*])` is an array.
fn substitute_params(x: &mut serde_json::Value, vars: &Vars) -> Result<(), String> {
    fn walk(x: &mut serde_json::Value, vars: &Vars) -> Result<(), String> {
        match x {
            serde_json::Value::Array(items) => {
                for i in items {
                    walk(i, vars)?;
                }
            }
            serde_json::Value::Object(m) => {
                if let (Some(serde_json::Value::String(_)), Some(val)) =
                    (m.get("name").cloned(), m.get("value").cloned())
                {
                    let pv: ParamValue = serde_json::from_value(val).map_err(|e| e.to_string())?;
                    let nv = vars.param_value(&pv, "params").map_err(|e| e.to_string())?;
                    m.insert(
                        "value".into(),
                        serde_json::to_value(nv).map_err(|e| e.to_string())?,
                    );
                } else {
                    for (_, v) in m.iter_mut() {
                        walk(v, vars)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
    walk(x, vars)
}

fn classify(err: &str, pt: &PipelineTask, tasks: &[Task<'_>]) -> Unresolved {
    // Which task's result was missing?
    for t in tasks {
        let needle = format!("$(tasks.{}.results.", t.pt.name);
        if err.contains(&needle) {
            let result = err
                .split(&needle)
                .nth(1)
                .and_then(|r| r.split([')', '.', '[']).next())
                .unwrap_or("");
            if t.state == State::Succeeded && !on_error_continue(pt) {
                return Unresolved::Invalid(format!(
                    "task {:?} completed successfully but did not emit the result {result:?}, which is referenced by task {:?}",
                    t.pt.name, pt.name
                ));
            }
            return Unresolved::Skip;
        }
    }
    Unresolved::Skip
}

fn uses_claim_template(pr: &PipelineRun, pt: &PipelineTask) -> bool {
    pt.workspaces.iter().any(|w| {
        let pw = w.workspace.as_deref().unwrap_or(&w.name);
        pr.spec
            .workspaces
            .iter()
            .any(|b| b.name == pw && b.volume_claim_template.is_some())
    })
}

fn claim_name(pr: &PipelineRun, b: &WorkspaceBinding) -> String {
    let t = b.volume_claim_template.as_ref();
    names::claim(
        t.and_then(|t| t.metadata.name.as_deref()),
        &b.name,
        pr.metadata.uid.as_deref().unwrap_or(""),
    )
}

fn owner(pr: &PipelineRun) -> OwnerReference {
    OwnerReference {
        api_version: tektite_api::v1::API_VERSION.into(),
        kind: "PipelineRun".into(),
        name: pr.metadata.name.clone().unwrap_or_default(),
        uid: pr.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// One claim per `volumeClaimTemplate` workspace of the run, owned by it.
fn claims(pr: &PipelineRun) -> Vec<PersistentVolumeClaim> {
    pr.spec
        .workspaces
        .iter()
        .filter_map(|b| {
            let t = b.volume_claim_template.as_ref()?;
            Some(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(pr, b)),
                    namespace: pr.metadata.namespace.clone(),
                    labels: t.metadata.labels.clone(),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: Some(vec![owner(pr)]),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            })
        })
        .collect()
}

fn join_sub_path(a: Option<&str>, b: Option<&str>) -> Option<String> {
    match (a.filter(|s| !s.is_empty()), b.filter(|s| !s.is_empty())) {
        (Some(a), Some(b)) => Some(format!(
            "{}/{}",
            a.trim_end_matches('/'),
            b.trim_start_matches('/')
        )),
        (Some(a), None) => Some(a.to_string()),
        (None, Some(b)) => Some(b.to_string()),
        (None, None) => None,
    }
}

/// The TaskRun(s) of a pipeline task (several for a matrix): what they
/// share ([`base_task_run`]), then each combination's name and params.
fn make_task_runs(
    pr: &PipelineRun,
    pt: &PipelineTask,
    finally: bool,
    pipeline_label: &str,
    tasks: &BTreeMap<String, TaskSpec>,
    config: &Config,
) -> Result<Vec<TaskRun>, Failure> {
    let combos = combinations(pt, config.max_matrix_combinations)?;
    let base = base_task_run(pr, pt, finally, pipeline_label, tasks, config)?;
    let pr_name = pr.metadata.name.clone().unwrap_or_default();
    let single = combos.len() == 1 && pt.matrix.is_none();
    let task_runs = combos.iter().enumerate().map(|(i, combo)| {
        let name = if single {
            names::child(&pr_name, &format!("-{}", pt.name))
        } else {
            names::child(&pr_name, &format!("-{}-{i}", pt.name))
        };
        combination_task_run(&base, pt, combo.as_ref(), name)
    });
    Ok(task_runs.collect())
}

/// The matrix combinations of a pipeline task (one `None` without a
/// matrix); fails on an invalid matrix or more than `limit` combinations.
fn combinations(
    pt: &PipelineTask,
    limit: usize,
) -> Result<Vec<Option<matrix::Combination>>, Failure> {
    let Some(m) = &pt.matrix else {
        return Ok(vec![None]);
    };
    let c = matrix::fan_out(m).map_err(|e| {
        Failure::new(
            reason::INVALID_MATRIX,
            format!("Failed to validate matrix {:?} with error {e:?}", pt.name),
        )
    })?;
    if c.len() > limit {
        return Err(Failure::new(
            reason::VALIDATION_FAILED,
            format!(
                "PipelineTask {:?} has {} matrix combinations, over the limit of {}",
                pt.name,
                c.len(),
                limit
            ),
        ));
    }
    Ok(c.into_iter().map(Some).collect())
}

/// What every TaskRun of a pipeline task shares: its metadata but the
/// name, and its spec but the params and the task, from the run's
/// `taskRunTemplate`, its `taskRunSpecs` entry and the pipeline task.
fn base_task_run(
    pr: &PipelineRun,
    pt: &PipelineTask,
    finally: bool,
    pipeline_label: &str,
    tasks: &BTreeMap<String, TaskSpec>,
    config: &Config,
) -> Result<TaskRun, Failure> {
    let trs_spec = pr
        .spec
        .task_run_specs
        .iter()
        .find(|s| s.pipeline_task_name == pt.name);
    let template = pr.spec.task_run_template.as_deref();
    let service_account = trs_spec
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .or_else(|| template.and_then(|t| t.service_account_name.clone()));
    let pod_template = merge_pod_templates(
        template.and_then(|t| t.pod_template.as_deref()),
        trs_spec.and_then(|s| s.pod_template.as_deref()),
    );
    let workspaces = bind_workspaces(pr, pt, tasks)?;
    let annotations = annotations(pr, pt, trs_spec);
    Ok(TaskRun {
        metadata: ObjectMeta {
            name: None,
            namespace: pr.metadata.namespace.clone(),
            labels: Some(labels(pr, pt, trs_spec, finally, pipeline_label)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![owner(pr)]),
            ..Default::default()
        },
        spec: TaskRunSpec {
            service_account_name: service_account,
            retries: pt.retries.filter(|r| *r > 0),
            timeout: task_timeout(pr, pt, trs_spec, finally, config),
            pod_template: pod_template.map(Box::new),
            workspaces,
            step_specs: trs_spec.map(|s| s.step_specs.clone()).unwrap_or_default(),
            sidecar_specs: trs_spec
                .map(|s| s.sidecar_specs.clone())
                .unwrap_or_default(),
            compute_resources: trs_spec.and_then(|s| s.compute_resources.clone()),
            ..Default::default()
        },
        status: None,
    })
}

/// The pipeline task's workspaces bound to the run's (sub-paths joined, a
/// `volumeClaimTemplate` replaced by the run's claim); an optional one the
/// run does not bind is left out, a required one fails.
fn bind_workspaces(
    pr: &PipelineRun,
    pt: &PipelineTask,
    tasks: &BTreeMap<String, TaskSpec>,
) -> Result<Vec<WorkspaceBinding>, Failure> {
    let declared = |name: &str| -> Option<bool> {
        let spec = pt.task_spec.as_ref().map(|e| &e.task).or_else(|| {
            pt.task_ref
                .as_ref()
                .and_then(|r| r.name.as_ref())
                .and_then(|n| tasks.get(n))
        })?;
        spec.workspaces
            .iter()
            .find(|w| w.name == name)
            .map(|w| w.optional)
    };
    let mut workspaces = Vec::new();
    for w in &pt.workspaces {
        let pw = w.workspace.as_deref().unwrap_or(&w.name);
        let Some(b) = pr.spec.workspaces.iter().find(|b| b.name == pw) else {
            if declared(&w.name) == Some(true) {
                continue;
            }
            return Err(Failure::new(
                reason::INVALID_WORKSPACE_BINDINGS,
                format!(
                    "expected workspace {:?} to be provided by pipelinerun for pipeline task {:?}",
                    pw, pt.name
                ),
            ));
        };
        let mut nb = b.clone();
        nb.name = w.name.clone();
        nb.sub_path = join_sub_path(b.sub_path.as_deref(), w.sub_path.as_deref());
        if b.volume_claim_template.is_some() {
            nb.volume_claim_template = None;
            nb.persistent_volume_claim = Some(
                k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(pr, b),
                    read_only: None,
                },
            );
        }
        workspaces.push(nb);
    }
    Ok(workspaces)
}

/// The TaskRun's timeout: the task's own, else the run's tasks/finally
/// timeout when it is longer than the default, else the TaskRun default.
fn task_timeout(
    pr: &PipelineRun,
    pt: &PipelineTask,
    trs_spec: Option<&PipelineTaskRunSpec>,
    finally: bool,
    config: &Config,
) -> Option<String> {
    let t = pr.spec.timeouts.clone().unwrap_or_default();
    let t = timeouts_fields(&t, finally);
    trs_spec
        .and_then(|s| s.timeout.clone())
        .or(pt.timeout.clone())
        .or_else(|| {
            t.filter(|d| d.is_zero() || *d > config.default_timeout)
                .map(go_duration)
        })
}

/// The TaskRun's labels: its `taskRunSpecs` metadata's, then the run's
/// with Tekton's own, then the embedded spec's (earlier wins).
fn labels(
    pr: &PipelineRun,
    pt: &PipelineTask,
    trs_spec: Option<&PipelineTaskRunSpec>,
    finally: bool,
    pipeline_label: &str,
) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    if let Some(m) = trs_spec.and_then(|s| s.metadata.as_ref()) {
        labels.extend(m.labels.clone());
    }
    let mut run_labels = pr.metadata.labels.clone().unwrap_or_default();
    run_labels.insert("tekton.dev/pipeline".into(), pipeline_label.to_string());
    run_labels.insert(
        "tekton.dev/pipelineRun".into(),
        pr.metadata.name.clone().unwrap_or_default(),
    );
    if let Some(uid) = &pr.metadata.uid {
        run_labels.insert("tekton.dev/pipelineRunUID".into(), uid.clone());
    }
    run_labels.insert("tekton.dev/pipelineTask".into(), pt.name.clone());
    run_labels.insert(
        "tekton.dev/memberOf".into(),
        if finally { "finally" } else { "tasks" }.into(),
    );
    for (k, v) in run_labels {
        labels.entry(k).or_insert(v);
    }
    if let Some(m) = pt.task_spec.as_ref().and_then(|e| e.metadata.as_ref()) {
        for (k, v) in &m.labels {
            labels.entry(k.clone()).or_insert(v.clone());
        }
    }
    labels
}

/// The TaskRun's annotations: its `taskRunSpecs` metadata's, then the
/// run's (but Chains' and kubectl's), then the embedded spec's (earlier
/// wins); `onError: continue` marked.
fn annotations(
    pr: &PipelineRun,
    pt: &PipelineTask,
    trs_spec: Option<&PipelineTaskRunSpec>,
) -> BTreeMap<String, String> {
    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    if let Some(m) = trs_spec.and_then(|s| s.metadata.as_ref()) {
        annotations.extend(m.annotations.clone());
    }
    for (k, v) in pr.metadata.annotations.clone().unwrap_or_default() {
        if !k.starts_with("chains.tekton.dev/")
            && k != "kubectl.kubernetes.io/last-applied-configuration"
        {
            annotations.entry(k).or_insert(v);
        }
    }
    if let Some(m) = pt.task_spec.as_ref().and_then(|e| e.metadata.as_ref()) {
        for (k, v) in &m.annotations {
            annotations.entry(k.clone()).or_insert(v.clone());
        }
    }
    if on_error_continue(pt) {
        annotations.insert(ON_ERROR_ANNOTATION.into(), "continue".into());
    }
    annotations
}

/// One TaskRun of a pipeline task: the shared one with its name, its
/// params, and the task it runs (an embedded spec with those params
/// applied, else the reference).
fn combination_task_run(
    base: &TaskRun,
    pt: &PipelineTask,
    combo: Option<&matrix::Combination>,
    name: String,
) -> TaskRun {
    let params = task_run_params(pt, combo);
    let task_spec = embedded_spec(pt, &params);
    let mut tr = base.clone();
    tr.metadata.name = Some(name);
    tr.spec.task_ref = if task_spec.is_some() {
        None
    } else {
        pt.task_ref.clone()
    };
    tr.spec.task_spec = task_spec.map(Box::new);
    tr.spec.params = params;
    tr
}

/// A combination's params, then the pipeline task's, with
/// `context.pipelineTask.retries` applied.
fn task_run_params(pt: &PipelineTask, combo: Option<&matrix::Combination>) -> Vec<Param> {
    let mut params: Vec<Param> = Vec::new();
    if let Some(c) = combo {
        params.extend(c.iter().map(|(k, v)| Param {
            name: k.clone(),
            value: ParamValue::String(v.clone()),
        }));
    }
    params.extend(pt.params.iter().cloned());
    let mut pvars = Vars::default();
    pvars.set_str(
        "context.pipelineTask.retries",
        pt.retries.unwrap_or(0).to_string(),
    );
    for p in &mut params {
        if let Ok(v) = pvars.param_value(&p.value, "params") {
            p.value = v;
        }
    }
    params
}

/// An embedded spec with the TaskRun's params applied to it.
fn embedded_spec(pt: &PipelineTask, params: &[Param]) -> Option<TaskSpec> {
    let e = pt.task_spec.as_ref()?;
    let mut vars = Vars::default();
    for p in params {
        vars.set(format!("params.{}", p.name), p.value.clone());
    }
    let mut j = serde_json::to_value(&e.task).unwrap_or_default();
    let _ = vars.json(&mut j, "taskSpec", &["name"]);
    Some(serde_json::from_value::<TaskSpec>(j).unwrap_or_else(|_| e.task.clone()))
}

fn timeouts_fields(t: &tektite_api::v1::TimeoutFields, finally: bool) -> Option<Duration> {
    let p = dur(t.pipeline.as_deref());
    let (own, other) = if finally {
        (dur(t.finally.as_deref()), dur(t.tasks.as_deref()))
    } else {
        (dur(t.tasks.as_deref()), dur(t.finally.as_deref()))
    };
    own.or_else(|| match (p, other) {
        (Some(p), Some(o)) if !p.is_zero() && !o.is_zero() => p.checked_sub(o),
        _ => None,
    })
}

/// A task-level pod template over the run-level one, field by field.
fn merge_pod_templates(
    base: Option<&PodTemplate>,
    over: Option<&PodTemplate>,
) -> Option<PodTemplate> {
    match (base, over) {
        (None, None) => None,
        (Some(b), None) => Some(b.clone()),
        (None, Some(o)) => Some(o.clone()),
        (Some(b), Some(o)) => {
            let mut bj = serde_json::to_value(b).ok()?;
            let oj = serde_json::to_value(o).ok()?;
            if let (Some(bm), Some(om)) = (bj.as_object_mut(), oj.as_object()) {
                for (k, v) in om {
                    bm.insert(k.clone(), v.clone());
                }
            }
            serde_json::from_value(bj).ok()
        }
    }
}

/// Applies pipeline-level variables to every pipeline task.
fn substitute_pipeline(spec: &PipelineSpec, vars: &Vars) -> Result<PipelineSpec, String> {
    let mut spec = spec.clone();
    for (list, tasks) in [("tasks", &mut spec.tasks), ("finally", &mut spec.finally)] {
        for (i, t) in tasks.iter_mut().enumerate() {
            substitute_task(t, vars, &format!("spec.{list}[{i}]")).map_err(|e| e.to_string())?;
        }
    }
    Ok(spec)
}

/// Applies pipeline-level variables to the fields of one pipeline task
/// Tekton substitutes (typed: a whole `$(params.arr[*])` keeps its type).
fn substitute_task(
    t: &mut PipelineTask,
    vars: &Vars,
    path: &str,
) -> Result<(), crate::subst::SubstError> {
    let params = |ps: &mut Vec<Param>, at: &str| -> Result<(), crate::subst::SubstError> {
        for (k, p) in ps.iter_mut().enumerate() {
            p.value = vars.param_value(&p.value, &format!("{at}[{k}].value"))?;
        }
        Ok(())
    };
    params(&mut t.params, &format!("{path}.params"))?;
    if let Some(m) = t.matrix.as_mut() {
        params(&mut m.params, &format!("{path}.matrix.params"))?;
        for (k, inc) in m.include.iter_mut().enumerate() {
            params(
                &mut inc.params,
                &format!("{path}.matrix.include[{k}].params"),
            )?;
        }
    }
    for (k, w) in t.when.iter_mut().enumerate() {
        let at = format!("{path}.when[{k}]");
        if let Some(input) = &w.input {
            w.input = Some(vars.str(input, &format!("{at}.input"))?);
        }
        w.values = vars.array(&w.values, &format!("{at}.values"))?;
        if let Some(cel) = &w.cel {
            w.cel = Some(vars.str(cel, &format!("{at}.cel"))?);
        }
    }
    if let Some(d) = &t.display_name {
        t.display_name = Some(vars.str(d, &format!("{path}.displayName"))?);
    }
    for (k, w) in t.workspaces.iter_mut().enumerate() {
        if let Some(sub) = &w.sub_path {
            w.sub_path = Some(vars.str(sub, &format!("{path}.workspaces[{k}].subPath"))?);
        }
    }
    if let Some(r) = t.task_ref.as_mut() {
        if let Some(n) = &r.name {
            r.name = Some(vars.str(n, &format!("{path}.taskRef.name"))?);
        }
        params(&mut r.params, &format!("{path}.taskRef.params"))?;
    }
    if let Some(o) = &t.on_error {
        t.on_error = Some(vars.str(o, &format!("{path}.onError"))?);
    }
    if let Some(e) = t.task_spec.as_mut() {
        // Implicit propagation: pipeline values reach inline specs; what
        // they declare themselves stays for the TaskRun.
        let mut lenient = vars.clone();
        lenient.clear_strict();
        let mut j = serde_json::to_value(&e.task).unwrap_or_default();
        lenient.json(&mut j, &format!("{path}.taskSpec"), &["name"])?;
        if let Ok(task) = serde_json::from_value(j) {
            e.task = task;
        }
    }
    Ok(())
}

/// Sets `status.results` from the pipeline's result declarations; returns
/// the names of results that reference results a succeeded task did not emit.
fn pipeline_results(
    st: &mut PipelineRunStatus,
    spec: &PipelineSpec,
    tasks: &[Task<'_>],
) -> Vec<String> {
    let mut v = result_vars(tasks, &Vars::default(), None);
    for t in tasks {
        for c in &t.children {
            for r in c.status.iter().flat_map(|s| &s.results) {
                if t.finally {
                    v.set(
                        format!("finally.{}.results.{}", t.pt.name, r.name),
                        r.value.clone(),
                    );
                }
            }
        }
    }
    v.strict("finally.");
    let mut invalid = Vec::new();
    let mut results = Vec::new();
    for r in &spec.results {
        match v.param_value(&r.value, &format!("results.{}", r.name)) {
            Ok(value) => results.push(PipelineRunResult {
                name: r.name.clone(),
                value,
            }),
            Err(e) => {
                // Omitted silently when the task did not succeed.
                let from_ok_task = tasks.iter().any(|t| {
                    t.state == State::Succeeded
                        && (e.reference.contains(&format!("tasks.{}.", t.pt.name))
                            || e.reference.contains(&format!("finally.{}.", t.pt.name)))
                });
                if from_ok_task {
                    invalid.push(r.name.clone());
                }
            }
        }
    }
    st.results = results;
    invalid
}

/// Child references in state order: each task's existing TaskRuns, then
/// those created now.
fn child_references(tasks: &[Task<'_>], created: &[TaskRun]) -> Vec<ChildStatusReference> {
    let mut refs = Vec::new();
    for task in tasks {
        let existing = task.children.iter().filter_map(|c| c.metadata.name.clone());
        let new = created
            .iter()
            .filter(|c| label(c, "tekton.dev/pipelineTask") == Some(task.pt.name.as_str()))
            .filter_map(|c| c.metadata.name.clone());
        for n in existing.chain(new) {
            refs.push(ChildStatusReference {
                api_version: Some(tektite_api::v1::API_VERSION.into()),
                kind: Some("TaskRun".into()),
                name: n,
                display_name: task.pt.display_name.clone(),
                pipeline_task_name: task.pt.name.clone(),
                when_expressions: task.pt.when.clone(),
            });
        }
    }
    refs
}

/// Skipped tasks in state order, with their `when` (finally tasks only when
/// that was the reason).
fn skipped_tasks(tasks: &[Task<'_>]) -> Vec<SkippedTask> {
    tasks
        .iter()
        .filter_map(|t| match t.state {
            State::Skipped(r) => Some(SkippedTask {
                name: t.pt.name.clone(),
                reason: r.into(),
                when_expressions: if !t.finally || r == reason::SKIP_WHEN {
                    t.pt.when.clone()
                } else {
                    Vec::new()
                },
            }),
            _ => None,
        })
        .collect()
}
