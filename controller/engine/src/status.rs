//! Pod → TaskRun status: step and sidecar states, results, and the
//! `Succeeded` condition with Tekton's reasons and messages (Tekton 1.x:
//! `StepFailed`, `StepOOM`, `PodEvicted`, … rather than a bare `Failed`).
//!
//! A step's report comes from the pod annotation `tektite.dev/step.<container>`
//! that its entrypoint wrote (full results, up to the object size limit), or
//! else from the container's termination message in Tekton's format.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tektite_api::param::ParamValue;
use tektite_api::v1::{
    Condition, PipelineRun, RunResult, SidecarState, StepState, TaskRun, TaskRunStatus, TaskSpec,
};
use tektite_entrypoint::contract::{self as ep, Report};

/// Condition reasons of a TaskRun (Tekton's names).
pub mod reason {
    pub const STARTED: &str = "Started";
    pub const RUNNING: &str = "Running";
    pub const PENDING: &str = "Pending";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const STEP_FAILED: &str = "StepFailed";
    pub const STEP_OOM: &str = "StepOOM";
    pub const SIDECAR_FAILED: &str = "SidecarFailed";
    pub const SIDECAR_OOM: &str = "SidecarOOM";
    pub const INIT_FAILED: &str = "InitContainerFailed";
    pub const INIT_OOM: &str = "InitContainerOOM";
    pub const POD_EVICTED: &str = "PodEvicted";
    pub const FAILURE_IGNORED: &str = "FailureIgnored";
    pub const TO_BE_RETRIED: &str = "ToBeRetried";
    pub const CANCELLED: &str = "TaskRunCancelled";
    pub const TIMEOUT: &str = "TaskRunTimeout";
    pub const RUN_PENDING: &str = "TaskRunPending";
    pub const IMAGE_PULL_FAILED: &str = "TaskRunImagePullFailed";
    pub const PULL_IMAGE_FAILED: &str = "PullImageFailed";
    pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
    pub const POD_CREATION_FAILED: &str = "PodCreationFailed";
    pub const EXCEEDED_NODE_RESOURCES: &str = "ExceededNodeResources";
    pub const VALIDATION_FAILED: &str = "TaskRunValidationFailed";
}

/// The annotation on a pod whose sidecars Tektite stopped.
pub const SIDECARS_STOPPED: &str = "tektite.dev/sidecars-stopped";

/// A Kubernetes Event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: String,
    pub message: String,
}

/// The annotation a PipelineRun sets on TaskRuns of `onError: continue` tasks.
pub const ON_ERROR_ANNOTATION: &str = "pipeline.tekton.dev/pipeline-task-on-error";

/// A condition of type `Succeeded`.
pub fn condition(
    status: &str,
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: "Succeeded".into(),
        status: status.into(),
        severity: None,
        last_transition_time: Some(Time(now)),
        reason: Some(reason.into()),
        message: Some(message.into()),
    }
}

/// Sets the `Succeeded` condition, keeping the transition time when neither
/// status nor reason changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut c: Condition) {
    if let Some(old) = conditions.iter_mut().find(|o| o.type_ == c.type_) {
        if old.status == c.status && old.reason == c.reason {
            c.last_transition_time = old.last_transition_time.clone();
        }
        *old = c;
    } else {
        conditions.push(c);
    }
}

/// The Event that reports a run's end from its `Succeeded` condition.
pub fn end_event(conditions: &[Condition]) -> Event {
    let c = Condition::succeeded(conditions)
        .cloned()
        .unwrap_or_default();
    Event {
        type_: if c.status == "True" {
            "Normal"
        } else {
            "Warning"
        },
        reason: c.reason.unwrap_or_default(),
        message: c.message.unwrap_or_default(),
    }
}

/// Ends a TaskRun that cannot go on (an image whose command cannot be read,
/// a pod that cannot be created): `Succeeded=False` with `reason`, completed
/// `now`. Both runners use it, so they fail a run the same way.
pub fn fail_task_run(tr: &mut TaskRun, reason: &str, message: impl Into<String>, now: Timestamp) {
    let st = tr.status.get_or_insert_with(Default::default);
    set_condition(&mut st.conditions, condition("False", reason, message, now));
    st.completion_time = Some(Time(now));
}

/// Ends a PipelineRun that cannot go on, as [`fail_task_run`] ends a
/// TaskRun.
pub fn fail_pipeline_run(
    pr: &mut PipelineRun,
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
) {
    let st = pr.status.get_or_insert_with(Default::default);
    set_condition(&mut st.conditions, condition("False", reason, message, now));
    st.completion_time = Some(Time(now));
}

/// Whether a condition list says the run is over (True or False).
pub fn is_done(conditions: &[Condition]) -> bool {
    Condition::succeeded(conditions).is_some_and(|c| c.status != "Unknown")
}

/// One step's report: the pod annotation, else the termination message;
/// either only when it agrees with what the kubelet saw of the step's
/// container ([`report_problem`]). Both are written from inside the pod,
/// but any container holding the pod's token may have written the
/// annotation first, while only the step's own container writes its
/// termination message (its entrypoint falls back to it when the PATCH of
/// its report is refused): an annotation that does not agree gives way to
/// a message that does. When neither can be used, why the annotation (or
/// else the message) was refused.
fn step_report(
    pod: &Pod,
    container: &str,
    cs: Option<&ContainerStatus>,
) -> Result<Option<Report>, String> {
    let Some(term) = cs.and_then(terminated) else {
        return Ok(None);
    };
    let flags = StepFlags::of_step(pod, container);
    let key = format!("{}{container}", ep::STEP_ANNOTATION_PREFIX);
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&key))
        .and_then(|v| serde_json::from_str::<Report>(v).ok());
    let message = term.message.as_deref().and_then(parse_termination_message);
    let mut first_problem = None;
    for report in [annotated, message].into_iter().flatten() {
        match report_problem(&report, term.exit_code, flags) {
            None => return Ok(Some(report)),
            Some(problem) => {
                first_problem.get_or_insert(problem);
            }
        }
    }
    match first_problem {
        None => Ok(None),
        Some(problem) => Err(format!("the step's report was not used: {problem}")),
    }
}

/// What a step's entrypoint was told that a report must agree with, read
/// from its flags in the pod (the controller's own spec): those before
/// `-entrypoint`, as what follows is the step's own command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepFlags {
    /// `-max_result_size`, else the entrypoint's default.
    pub max_result_size: usize,
    /// `-on_error continue`.
    pub on_error_continue: bool,
    /// `-when_expressions`: the step may be skipped with exit code 0.
    pub has_when: bool,
}

impl StepFlags {
    pub fn of(c: &Container) -> StepFlags {
        let args = c.args.as_deref().unwrap_or_default();
        let flags = args
            .iter()
            .position(|a| a == "-entrypoint")
            .map_or(args, |end| &args[..end]);
        let value = |name: &str| {
            flags
                .windows(2)
                .find(|w| w[0] == name)
                .map(|w| w[1].as_str())
        };
        StepFlags {
            max_result_size: value("-max_result_size")
                .and_then(|v| v.parse().ok())
                .unwrap_or(ep::DEFAULT_MAX_RESULT_SIZE),
            on_error_continue: value("-on_error") == Some("continue"),
            has_when: value("-when_expressions").is_some(),
        }
    }

    fn of_step(pod: &Pod, container: &str) -> StepFlags {
        let c = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == container));
        c.map_or(
            StepFlags {
                max_result_size: ep::DEFAULT_MAX_RESULT_SIZE,
                on_error_continue: false,
                has_when: false,
            },
            StepFlags::of,
        )
    }
}

/// Why a report cannot be the one the step's entrypoint wrote: what it says
/// does not match the exit code the container ended with (the entrypoint
/// exits 0 for a success, the command's non-zero code for an error, 0 for
/// an error `onError: continue` lets pass, its own codes for what it
/// decided), or a result is over the size limit the entrypoint enforces. A
/// report written before the entrypoint failed on its markers (exit code
/// IO) does not match either: the step failed, and its container's state
/// says so.
pub fn report_problem(r: &Report, container_code: i32, flags: StepFlags) -> Option<String> {
    use ep::{Reason, exit};
    let says = || {
        format!(
            "it says {} (exit code {})",
            reason_name(r.reason),
            r.exit_code
        )
    };
    let expected = match r.reason {
        Reason::Completed if r.exit_code == 0 => 0,
        Reason::Continued if r.exit_code != 0 && flags.on_error_continue => 0,
        Reason::Error if r.exit_code != 0 => r.exit_code,
        Reason::Completed | Reason::Error => return Some(says()),
        Reason::Continued => {
            return Some(format!("{}, but the step is not onError: continue", says()));
        }
        Reason::Skipped if r.exit_code == 0 && flags.has_when => 0,
        Reason::Skipped => exit::SKIPPED,
        Reason::TimeoutExceeded => exit::TIMEOUT,
        Reason::ResultTooLarge => exit::RESULT_TOO_LARGE,
        Reason::CannotExec => exit::CANNOT_EXEC,
        Reason::WaitInterrupted => exit::WAIT_INTERRUPTED,
    };
    if expected != container_code {
        return Some(format!(
            "{}, but the container ended with exit code {container_code}",
            says()
        ));
    }
    let limit = flags.max_result_size;
    r.results.iter().find(|v| v.value.len() > limit).map(|v| {
        format!(
            "result {:?} is {} bytes, over the limit of {limit} bytes",
            v.name,
            v.value.len()
        )
    })
}

#[derive(serde::Deserialize)]
struct Entry {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(rename = "type", default)]
    kind: serde_json::Value,
}

/// Reads Tekton's termination-message JSON (`[{key, value, type}]`; types 1
/// task result, 3 internal, 4 step result) into a report.
pub fn parse_termination_message(message: &str) -> Option<Report> {
    let entries: Vec<Entry> = serde_json::from_str(message).ok()?;
    let mut report = Report {
        step: String::new(),
        exit_code: 0,
        reason: ep::Reason::Completed,
        message: String::new(),
        started_at: String::new(),
        finished_at: String::new(),
        results: Vec::new(),
    };
    let mut saw_reason = false;
    for e in entries {
        let kind = match &e.kind {
            serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
            serde_json::Value::String(s) => match s.as_str() {
                "TaskRunResult" => 1,
                "InternalTektonResult" => 3,
                "StepResult" => 4,
                _ => 10,
            },
            _ => 0,
        };
        match (kind, e.key.as_str()) {
            (3, "StartedAt") => report.started_at = e.value,
            (3, "ExitCode") => report.exit_code = e.value.parse().unwrap_or(0),
            (3, "Reason") => {
                let (r, rest) = e.value.split_once(';').unwrap_or((&e.value, ""));
                if let Ok(parsed) =
                    serde_json::from_value(serde_json::Value::String(r.trim().into()))
                {
                    report.reason = parsed;
                    saw_reason = true;
                }
                report.message = rest.trim().to_string();
            }
            (1 | 4, _) => report.results.push(ep::ResultValue {
                name: e.key,
                kind: if kind == 1 {
                    ep::ResultKind::Task
                } else {
                    ep::ResultKind::Step
                },
                value: e.value,
            }),
            _ => {}
        }
    }
    if !saw_reason && report.exit_code != 0 {
        report.reason = ep::Reason::Continued;
    }
    Some(report)
}

fn reason_name(r: ep::Reason) -> String {
    format!("{r:?}")
}

/// A result value typed by its declaration: `string` verbatim, otherwise
/// JSON arrays and objects of strings, else the text.
fn typed(value: &str, declared: Option<&str>) -> ParamValue {
    if declared == Some("string") {
        return ParamValue::String(value.to_string());
    }
    let t = value.trim();
    if t.starts_with('[')
        && let Ok(a) = serde_json::from_str::<Vec<String>>(t)
    {
        return ParamValue::Array(a);
    }
    if t.starts_with('{')
        && let Ok(o) = serde_json::from_str::<BTreeMap<String, String>>(t)
    {
        return ParamValue::Object(o);
    }
    if let Ok(s) = serde_json::from_str::<String>(t) {
        return ParamValue::String(s);
    }
    ParamValue::String(value.to_string())
}

fn terminated(
    cs: &ContainerStatus,
) -> Option<&k8s_openapi::api::core::v1::ContainerStateTerminated> {
    cs.state.as_ref()?.terminated.as_ref()
}

fn waiting(cs: &ContainerStatus) -> Option<&k8s_openapi::api::core::v1::ContainerStateWaiting> {
    cs.state.as_ref()?.waiting.as_ref()
}

/// The status a TaskRun has given its pod. `previous` is the status so far
/// (start time, retries); the condition, steps, sidecars and results are
/// read from the pod.
pub fn from_pod(tr: &TaskRun, spec: &TaskSpec, pod: &Pod, now: Timestamp) -> TaskRunStatus {
    let mut st = tr.status.clone().unwrap_or_default();
    st.pod_name = pod.metadata.name.clone();
    let view = PodView::of(pod);
    let read = read_steps(pod, spec, &view);
    if !read.steps.is_empty() {
        st.steps = read.steps;
    }
    st.sidecars = sidecar_states(pod);

    let progress = view.progress();
    if !progress.complete {
        let tr_name = tr.metadata.name.clone().unwrap_or_default();
        if let Some((r, m)) = fatal_waiting(&view, &tr_name) {
            terminate_steps(&mut st, r, pod, tr, now);
            set_condition(&mut st.conditions, condition("False", r, m, now));
            st.completion_time = Some(Time(now));
        } else {
            set_condition(&mut st.conditions, still_going(&view, pod, now));
        }
        return st;
    }

    st.completion_time = Some(Time(now));
    st.results = read.results;
    let c = end_condition(tr, &view, &progress, read.timed_out_step.as_deref(), now);
    set_condition(&mut st.conditions, c);
    st
}

/// What [`from_pod`] reads of a pod: its phase, its containers in pod order
/// and their statuses by name, and whether Tektite stopped its sidecars.
struct PodView<'a> {
    status: k8s_openapi::api::core::v1::PodStatus,
    phase: String,
    containers: &'a [Container],
    statuses: BTreeMap<&'a str, &'a ContainerStatus>,
    /// Sidecars Tektite stopped end with the exit code of a command that
    /// could not run, and the pod `Failed` with them: neither is the run's.
    sidecars_stopped: bool,
}

impl<'a> PodView<'a> {
    fn of(pod: &'a Pod) -> Self {
        let status = pod.status.clone().unwrap_or_default();
        let phase = status.phase.clone().unwrap_or_else(|| "Pending".into());
        let statuses = pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .map(|c| (c.name.as_str(), c))
            .collect();
        let containers = pod.spec.as_ref().map_or(&[][..], |s| &s.containers);
        let sidecars_stopped = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(SIDECARS_STOPPED));
        PodView {
            status,
            phase,
            containers,
            statuses,
            sidecars_stopped,
        }
    }

    fn status_of(&self, c: &Container) -> Option<&'a ContainerStatus> {
        self.statuses.get(c.name.as_str()).copied()
    }

    fn step_containers(&self) -> impl Iterator<Item = &'a Container> + use<'a> {
        self.containers
            .iter()
            .filter(|c| c.name.starts_with("step-"))
    }

    /// Whether the pod is done with its steps, and whether one of them
    /// failed.
    fn progress(&self) -> Progress {
        let step_statuses: Vec<&ContainerStatus> = self
            .step_containers()
            .filter_map(|c| self.status_of(c))
            .collect();
        let n_steps = self.step_containers().count();
        let all_done =
            step_statuses.len() == n_steps && step_statuses.iter().all(|c| terminated(c).is_some());
        let oom = step_statuses
            .iter()
            .any(|c| terminated(c).is_some_and(|t| t.reason.as_deref() == Some("OOMKilled")));
        let phase = self.phase.as_str();
        let complete =
            (phase == "Running" && all_done) || phase == "Succeeded" || phase == "Failed" || oom;
        let step_failed = step_statuses.iter().any(|c| {
            terminated(c)
                .is_some_and(|t| t.exit_code != 0 || t.reason.as_deref() == Some("OOMKilled"))
        });
        Progress {
            complete,
            failed: (phase == "Failed" && !self.sidecars_stopped) || step_failed,
        }
    }
}

/// How far a pod has got ([`PodView::progress`]).
struct Progress {
    complete: bool,
    failed: bool,
}

/// The steps read from a pod ([`read_steps`]).
struct StepsRead {
    steps: Vec<StepState>,
    /// Task results, including those that take a step result's value.
    results: Vec<RunResult>,
    /// The first step that ended because it exceeded its timeout.
    timed_out_step: Option<String>,
}

/// The state of each step, in pod order, with what its report says: times,
/// exit code, message, reason and results.
fn read_steps(pod: &Pod, spec: &TaskSpec, view: &PodView<'_>) -> StepsRead {
    let mut read = StepsRead {
        steps: Vec::new(),
        results: Vec::new(),
        timed_out_step: None,
    };
    for c in view.step_containers() {
        let cs = view.status_of(c);
        let mut state = StepState {
            name: c.name.trim_start_matches("step-").to_string(),
            container: Some(c.name.clone()),
            image_id: cs.map(|s| s.image_id.clone()).filter(|s| !s.is_empty()),
            ..Default::default()
        };
        if let Some(s) = cs.and_then(|s| s.state.as_ref()) {
            state.waiting = s.waiting.clone();
            state.running = s.running.clone();
            state.terminated = s.terminated.clone();
        }
        if let Some(term) = state.terminated.as_mut() {
            state.termination_reason = term.reason.clone();
            let report = step_report(pod, &c.name, cs).unwrap_or_else(|problem| {
                term.message = Some(problem);
                None
            });
            if let Some(r) = report {
                apply_report(&r, term, &mut state.termination_reason);
                if r.reason == ep::Reason::TimeoutExceeded {
                    read.timed_out_step.get_or_insert_with(|| c.name.clone());
                }
                take_results(&r, spec, &c.name, &mut read.results, &mut state.results);
            }
        }
        read.steps.push(state);
    }
    results_from_steps(spec, &read.steps, &mut read.results);
    read
}

/// A step's report over what the kubelet saw of its container: the times,
/// the exit code, the message and the reason are the entrypoint's.
fn apply_report(
    r: &Report,
    term: &mut k8s_openapi::api::core::v1::ContainerStateTerminated,
    termination_reason: &mut Option<String>,
) {
    if let Ok(t) = r.started_at.parse::<Timestamp>() {
        term.started_at = Some(Time(t));
    }
    if let Ok(t) = r.finished_at.parse::<Timestamp>() {
        term.finished_at = Some(Time(t));
    }
    term.exit_code = r.exit_code;
    term.message = Some(r.message.clone()).filter(|m| !m.is_empty());
    *termination_reason = Some(reason_name(r.reason));
}

/// The results a step reported, typed by their declarations: task results
/// (a later step's value replaces an earlier one's) and step results.
fn take_results(
    r: &Report,
    spec: &TaskSpec,
    container: &str,
    task_results: &mut Vec<RunResult>,
    step_results: &mut Vec<RunResult>,
) {
    let declared_step = spec
        .steps
        .iter()
        .find(|s| format!("step-{}", s.name) == container)
        .map(|s| &s.results);
    for v in &r.results {
        match v.kind {
            ep::ResultKind::Task => {
                let decl = spec.results.iter().find(|d| d.name == v.name);
                let rr = RunResult {
                    name: v.name.clone(),
                    type_: Some(decl.map_or("string", |d| d.kind()).to_string()),
                    value: typed(&v.value, decl.map(|d| d.kind())),
                };
                match task_results.iter_mut().find(|x| x.name == rr.name) {
                    Some(x) => *x = rr,
                    None => task_results.push(rr),
                }
            }
            ep::ResultKind::Step => {
                let decl = declared_step.and_then(|d| d.iter().find(|x| x.name == v.name));
                let kind = decl.and_then(|d| d.type_.as_deref()).unwrap_or("string");
                step_results.push(RunResult {
                    name: v.name.clone(),
                    type_: Some(kind.to_string()),
                    value: typed(&v.value, Some(kind)),
                });
            }
        }
    }
}

/// Task results declared with a step result's value
/// (`value: $(steps.<step>.results.<name>)`) take that value.
fn results_from_steps(spec: &TaskSpec, steps: &[StepState], results: &mut Vec<RunResult>) {
    for d in &spec.results {
        if let Some(ParamValue::String(expr)) = &d.value
            && let Some(rest) = expr
                .strip_prefix("$(steps.")
                .and_then(|e| e.strip_suffix(')'))
            && let Some((step, name)) = rest.split_once(".results.")
            && let Some(v) = steps
                .iter()
                .find(|s| s.name == step)
                .and_then(|s| s.results.iter().find(|r| r.name == name))
        {
            results.retain(|r| r.name != d.name);
            results.push(RunResult {
                name: d.name.clone(),
                type_: Some(d.kind().to_string()),
                value: v.value.clone(),
            });
        }
    }
}

/// The first step or sidecar waiting for a reason that will not pass (an
/// image that cannot be pulled, a container that cannot be made): the
/// reason and message the TaskRun fails with.
fn fatal_waiting(view: &PodView<'_>, tr_name: &str) -> Option<(&'static str, String)> {
    for c in view.containers {
        let Some(cs) = view.status_of(c) else {
            continue;
        };
        let Some(w) = waiting(cs) else {
            continue;
        };
        let kind = if c.name.starts_with("sidecar-") {
            "sidecar"
        } else {
            "step"
        };
        let name = c
            .name
            .trim_start_matches("step-")
            .trim_start_matches("sidecar-");
        let msg = w.message.clone().unwrap_or_default();
        let image = &cs.image;
        let failed_to_start = || {
            format!(
                "the {kind} {name:?} in TaskRun {tr_name:?} failed to start. \
                 The pod errored with the message: \"{msg}.\""
            )
        };
        match w.reason.as_deref() {
            Some("ImagePullBackOff" | "InvalidImageName") => {
                return Some((
                    reason::IMAGE_PULL_FAILED,
                    format!(
                        "the {kind} {name:?} in TaskRun {tr_name:?} failed to pull the image {image:?}. \
                         The pod errored with the message: \"{msg}.\""
                    ),
                ));
            }
            Some("CreateContainerConfigError")
                if !msg.contains("failed to create subPath directory") =>
            {
                return Some((reason::CREATE_CONTAINER_CONFIG_ERROR, failed_to_start()));
            }
            Some("CreateContainerError") => {
                return Some((reason::POD_CREATION_FAILED, failed_to_start()));
            }
            _ => {}
        }
    }
    None
}

/// The condition of a pod whose steps have not all ended: running, or
/// pending and why.
fn still_going(view: &PodView<'_>, pod: &Pod, now: Timestamp) -> Condition {
    if view.phase == "Running" {
        condition(
            "Unknown",
            reason::RUNNING,
            "Not all Steps in the Task have finished executing",
            now,
        )
    } else {
        pending_condition(pod, now)
    }
}

/// The condition of a pod whose steps have all ended: succeeded, or failed
/// with Tekton's reason ([`failure`]), `FailureIgnored` for a pipeline task
/// with `onError: continue`.
fn end_condition(
    tr: &TaskRun,
    view: &PodView<'_>,
    progress: &Progress,
    timed_out_step: Option<&str>,
    now: Timestamp,
) -> Condition {
    if !progress.failed {
        return condition(
            "True",
            reason::SUCCEEDED,
            "All Steps have completed executing",
            now,
        );
    }
    let (why, message) = failure(
        &view.status,
        view.containers,
        &view.statuses,
        timed_out_step,
        view.sidecars_stopped,
    );
    let ignored = tr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ON_ERROR_ANNOTATION))
        .is_some_and(|v| v == "continue");
    let why = if ignored {
        reason::FAILURE_IGNORED
    } else {
        why
    };
    condition("False", why, message, now)
}

/// The states of a pod's sidecars, in pod order.
pub fn sidecar_states(pod: &Pod) -> Vec<SidecarState> {
    let statuses: BTreeMap<&str, &ContainerStatus> = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| (c.name.as_str(), c))
        .collect();
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.name.starts_with("sidecar-"))
        .map(|c| {
            let cs = statuses.get(c.name.as_str());
            let s = cs.and_then(|s| s.state.clone()).unwrap_or_default();
            SidecarState {
                name: c.name.trim_start_matches("sidecar-").to_string(),
                container: Some(c.name.clone()),
                image_id: cs.map(|s| s.image_id.clone()).filter(|s| !s.is_empty()),
                waiting: s.waiting,
                running: s.running,
                terminated: s.terminated,
            }
        })
        .collect()
}

fn pending_condition(pod: &Pod, now: Timestamp) -> Condition {
    let ps = pod.status.clone().unwrap_or_default();
    let all: Vec<&ContainerStatus> = ps
        .init_container_statuses
        .iter()
        .flatten()
        .chain(ps.container_statuses.iter().flatten())
        .collect();
    if ps.conditions.iter().flatten().any(|c| {
        c.reason.as_deref() == Some("Unschedulable")
            && c.message
                .as_deref()
                .is_some_and(|m| m.contains("Insufficient"))
    }) {
        return condition(
            "Unknown",
            reason::EXCEEDED_NODE_RESOURCES,
            "TaskRun Pod exceeded available resources",
            now,
        );
    }
    if all.iter().any(|c| {
        waiting(c).is_some_and(|w| {
            matches!(
                w.reason.as_deref(),
                Some(
                    "ImagePullBackOff"
                        | "ImageInspectError"
                        | "ErrImagePull"
                        | "ErrImageNeverPull"
                        | "RegistryUnavailable"
                        | "InvalidImageName"
                )
            )
        })
    }) {
        return condition(
            "Unknown",
            reason::PULL_IMAGE_FAILED,
            waiting_message(pod),
            now,
        );
    }
    condition("Unknown", reason::PENDING, waiting_message(pod), now)
}

/// What a pending pod is waiting for, in Tekton's words.
fn waiting_message(pod: &Pod) -> String {
    let ps = pod.status.clone().unwrap_or_default();
    for c in ps.container_statuses.iter().flatten() {
        if let Some(m) = waiting(c)
            .and_then(|w| w.message.clone())
            .filter(|m| !m.is_empty())
        {
            return format!("build step {:?} is pending with reason {m:?}", c.name);
        }
    }
    for c in ps.conditions.iter().flatten() {
        if c.status != "True" {
            return format!(
                "pod status {:?}:{:?}; message: {:?}",
                c.type_,
                c.status,
                c.message.clone().unwrap_or_default()
            );
        }
    }
    ps.message
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "Pending".into())
}

/// The reason and message of a failed pod, in Tekton's order of precedence.
fn failure(
    ps: &k8s_openapi::api::core::v1::PodStatus,
    containers: &[k8s_openapi::api::core::v1::Container],
    statuses: &BTreeMap<&str, &ContainerStatus>,
    timed_out_step: Option<&str>,
    sidecars_stopped: bool,
) -> (&'static str, String) {
    if ps.reason.as_deref() == Some("Evicted") {
        return (reason::POD_EVICTED, ps.message.clone().unwrap_or_default());
    }
    let exit_message = |cs: &ContainerStatus| -> String {
        let t = terminated(cs);
        let code = t.map_or(0, |t| t.exit_code);
        if timed_out_step == Some(cs.name.as_str()) {
            return format!(
                "{:?} exited because the step exceeded the specified timeout limit",
                cs.name
            );
        }
        match t.and_then(|t| t.reason.clone()).filter(|r| !r.is_empty()) {
            Some(r) => format!("{:?} exited with code {code}: {r}", cs.name),
            None => format!("{:?} exited with code {code}", cs.name),
        }
    };
    let is_oom = |cs: &ContainerStatus| {
        terminated(cs).is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"))
    };
    let is_failed = |cs: &ContainerStatus| terminated(cs).is_some_and(|t| t.exit_code != 0);
    let inits: Vec<&ContainerStatus> = ps.init_container_statuses.iter().flatten().collect();
    for (pred, sidecar, r) in [
        (
            &is_oom as &dyn Fn(&ContainerStatus) -> bool,
            true,
            reason::SIDECAR_OOM,
        ),
        (&is_oom, false, reason::INIT_OOM),
        (&is_failed, true, reason::SIDECAR_FAILED),
        (&is_failed, false, reason::INIT_FAILED),
    ] {
        if let Some(cs) = inits
            .iter()
            .find(|c| c.name.starts_with("sidecar-") == sidecar && pred(c))
        {
            return (r, format!("init container failed, {}", exit_message(cs)));
        }
    }
    let ordered: Vec<&ContainerStatus> = containers
        .iter()
        .filter_map(|c| statuses.get(c.name.as_str()).copied())
        .collect();
    for (pred, prefix, r) in [
        (
            &is_oom as &dyn Fn(&ContainerStatus) -> bool,
            "sidecar-",
            reason::SIDECAR_OOM,
        ),
        (&is_oom, "step-", reason::STEP_OOM),
        (&is_failed, "sidecar-", reason::SIDECAR_FAILED),
        (&is_failed, "step-", reason::STEP_FAILED),
    ] {
        if prefix == "sidecar-" && sidecars_stopped {
            continue;
        }
        if let Some(cs) = ordered
            .iter()
            .find(|c| c.name.starts_with(prefix) && pred(c))
        {
            return (r, exit_message(cs));
        }
    }
    let msg = ps
        .message
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "build failed for unspecified reasons.".into());
    (reason::FAILED, msg)
}

/// The state of a container ended by `why` with its pod (exit code 1).
fn ended_with_pod(
    why: &str,
    started_at: Option<Time>,
    now: Timestamp,
    message: String,
) -> k8s_openapi::api::core::v1::ContainerStateTerminated {
    k8s_openapi::api::core::v1::ContainerStateTerminated {
        exit_code: 1,
        started_at,
        finished_at: Some(Time(now)),
        reason: Some(why.into()),
        message: Some(message),
        ..Default::default()
    }
}

/// Marks every sidecar that has not ended as terminated by `why`, with its
/// pod (cancel, timeout: the pod is deleted), so that a finished run never
/// shows a sidecar still running in a pod that is gone.
pub fn terminate_sidecars(st: &mut TaskRunStatus, why: &str, pod_name: &str, now: Timestamp) {
    for s in st.sidecars.iter_mut().filter(|s| s.terminated.is_none()) {
        let started = s.running.take().and_then(|r| r.started_at);
        let message = format!(
            "Sidecar {} terminated as pod {pod_name} is terminated",
            s.name
        );
        s.terminated = Some(ended_with_pod(why, started, now, message));
        s.waiting = None;
    }
}

/// Marks every step that has not ended as terminated by `why` (cancel,
/// timeout, a fatal pod error), as Tekton does when it stops a pod.
pub fn terminate_steps(st: &mut TaskRunStatus, why: &str, pod: &Pod, tr: &TaskRun, now: Timestamp) {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let created = tr.metadata.creation_timestamp.clone();
    for s in st.steps.iter_mut().filter(|s| s.terminated.is_none()) {
        let started = s
            .running
            .take()
            .and_then(|r| r.started_at)
            .or_else(|| created.clone());
        let message = format!("Step {} terminated as pod {pod_name} is terminated", s.name);
        s.terminated = Some(ended_with_pod(why, started, now, message));
        s.waiting = None;
        s.termination_reason = Some(why.into());
    }
}

/// Where a run's spec came from, kept once as Tekton keeps it: the first
/// source known goes into `status.provenance.refSource` and stays.
/// Returns whether it was set now.
pub fn record_source(
    provenance: &mut Option<Box<tektite_api::v1::Provenance>>,
    source: tektite_api::v1::RefSource,
) -> bool {
    let p = provenance.get_or_insert_with(Default::default);
    if p.ref_source.is_some() {
        return false;
    }
    p.ref_source = Some(source);
    true
}

/// A run that waits (its refs being resolved): `Succeeded` `Unknown` with
/// `reason` and `message`. Returns whether that changed the conditions
/// (a run already waiting for the same reason is left as it is).
pub fn wait_for_refs(
    conditions: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let shown = conditions.iter().any(|c| {
        c.type_ == "Succeeded" && c.status == "Unknown" && c.reason.as_deref() == Some(reason)
    });
    if !shown {
        set_condition(conditions, condition("Unknown", reason, message, now));
    }
    !shown
}

/// Whether a run's status already says where its spec came from.
pub fn has_source(provenance: Option<&tektite_api::v1::Provenance>) -> bool {
    provenance.is_some_and(|p| p.ref_source.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(reason: ep::Reason, exit_code: i32, value: &str) -> Report {
        Report {
            step: "step-s".into(),
            exit_code,
            reason,
            message: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
            results: vec![ep::ResultValue {
                name: "r".into(),
                kind: ep::ResultKind::Task,
                value: value.into(),
            }],
        }
    }

    fn flags(args: &[&str]) -> StepFlags {
        StepFlags::of(&Container {
            name: "step-s".into(),
            args: Some(args.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        })
    }

    /// The limit and onError are the entrypoint's flags, not words of the
    /// step's own command after `-entrypoint` (which the Task's author
    /// writes).
    #[test]
    fn step_flags_are_read_from_the_entrypoints_flags_only() {
        let f = flags(&[
            "-on_error",
            "continue",
            "-max_result_size",
            "16",
            "-entrypoint",
            "sh",
            "--",
        ]);
        assert_eq!((f.max_result_size, f.on_error_continue), (16, true));
        let f = flags(&[
            "-entrypoint",
            "tool",
            "--",
            "-max_result_size",
            "999",
            "-on_error",
            "continue",
        ]);
        assert_eq!(
            (f.max_result_size, f.on_error_continue),
            (ep::DEFAULT_MAX_RESULT_SIZE, false)
        );
    }

    /// A step skipped by its `when` expressions ends with exit code 0; only
    /// a step with `-when_expressions` may report that, others are skipped
    /// with the entrypoint's own code.
    #[test]
    fn a_when_skipped_step_reports_exit_code_zero() {
        let report = Report {
            step: "s".into(),
            exit_code: 0,
            reason: ep::Reason::Skipped,
            message: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
            results: Vec::new(),
        };
        let when = flags(&["-when_expressions", "[]", "-entrypoint", "sh", "--"]);
        assert!(when.has_when);
        assert_eq!(report_problem(&report, 0, when), None);
        let plain = flags(&["-entrypoint", "sh", "--"]);
        assert!(report_problem(&report, 0, plain).is_some());
        let failed_before = Report {
            exit_code: ep::exit::SKIPPED,
            ..report
        };
        assert_eq!(
            report_problem(&failed_before, ep::exit::SKIPPED, plain),
            None
        );
    }

    #[test]
    fn a_report_must_match_its_containers_exit_code() {
        use ep::Reason::*;
        let plain = flags(&["-max_result_size", "8", "-entrypoint", "sh"]);
        let continues = flags(&[
            "-max_result_size",
            "8",
            "-on_error",
            "continue",
            "-entrypoint",
            "sh",
        ]);
        assert_eq!(report_problem(&report(Completed, 0, "ok"), 0, plain), None);
        assert_eq!(
            report_problem(&report(Continued, 3, "ok"), 0, continues),
            None
        );
        assert_eq!(report_problem(&report(Error, 3, "ok"), 3, plain), None);
        for (r, code, f) in [
            (report(Completed, 0, "ok"), 1, plain),
            (report(Completed, 0, "ok"), ep::exit::IO, plain),
            (report(Completed, 2, "ok"), 2, plain),
            (report(Error, 3, "ok"), 0, plain),
            (report(Error, 0, "ok"), 0, plain),
            (report(Continued, 3, "ok"), 0, plain),
            (report(Continued, 0, "ok"), 0, continues),
            (report(Skipped, 0, "ok"), 0, plain),
            (report(Completed, 0, "too long a value"), 0, plain),
        ] {
            assert!(report_problem(&r, code, f).is_some(), "{r:?} / {code}");
        }
    }

    /// A pod whose step `step-a` ended with `code`, reported by the
    /// annotation `report` and the termination message `message`.
    fn pod(code: i32, report: Option<serde_json::Value>, message: &str) -> Pod {
        let annotations = report.map_or(
            serde_json::json!({}),
            |r| serde_json::json!({"tektite.dev/step.step-a": r.to_string()}),
        );
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "annotations": annotations},
            "spec": {"containers": [{"name": "step-a", "args": ["-max_result_size", "4", "-entrypoint", "x"]}]},
            "status": {"containerStatuses": [{"name": "step-a", "image": "", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": code, "message": message}}}]}}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn annotation(reason: &str, code: i32, value: &str) -> Option<serde_json::Value> {
        Some(
            serde_json::json!({"step": "step-a", "exitCode": code, "reason": reason,
               "results": [{"name": "r", "kind": "task", "value": value}]}),
        )
    }

    fn read(p: &Pod) -> Result<Option<Report>, String> {
        let cs = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first());
        step_report(p, "step-a", cs)
    }

    /// Reports are used only where they agree with their container: an
    /// annotation that does not gives way to the step's own termination
    /// message when that one does, else the step has no report and says why.
    #[test]
    fn only_reports_that_agree_with_their_containers_are_used() {
        let own = r#"[{"key":"ExitCode","value":"3","type":3},{"key":"Reason","value":"Error","type":3}]"#;
        for (p, used) in [
            (
                pod(0, annotation("Completed", 0, "ok"), ""),
                Some(ep::Reason::Completed),
            ),
            (
                pod(3, annotation("Error", 3, "ok"), ""),
                Some(ep::Reason::Error),
            ),
            // Not `-on_error continue`; a success over a failure; a failure
            // over a success; a result over the limit.
            (pod(0, annotation("Continued", 3, "ok"), ""), None),
            (pod(1, annotation("Completed", 0, "ok"), ""), None),
            (pod(0, annotation("Error", 3, "ok"), ""), None),
            (pod(0, annotation("Completed", 0, "large"), ""), None),
            // The step's own message stands in for a forged annotation.
            (
                pod(3, annotation("Completed", 0, "ok"), own),
                Some(ep::Reason::Error),
            ),
            (pod(3, None, own), Some(ep::Reason::Error)),
        ] {
            match (read(&p), used) {
                (Ok(Some(r)), Some(reason)) => assert_eq!(r.reason, reason, "{p:?}"),
                (Err(why), None) => {
                    assert!(why.starts_with("the step's report was not used: "), "{why}")
                }
                (got, _) => panic!("{got:?} for {p:?}"),
            }
        }
    }
}
