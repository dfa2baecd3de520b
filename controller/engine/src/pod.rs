//! TaskRun → Pod, in Tekton's layout (docs/design.md, the entrypoint contract).
//!
//! Order of work, as Tekton's reconciler and pod builder do it: resolve
//! params; bind workspaces (claim templates become claims); substitute
//! variables into the spec; merge the stepTemplate, `stepSpecs` and the
//! task-level compute resources; place scripts; look up image commands for
//! steps without `command` (from resolved data: no I/O here); wrap every
//! step in the entrypoint; add the implicit volumes and mounts; apply the
//! pod template.
//!
//! Where Tektite differs from Tekton, on purpose: the first step waits for
//! `/tekton/downward/ready` only when the pod has sidecars (otherwise the pod
//! is created ready and the steps start at once); script files are named
//! `script-<i>` (no random suffix), so the same TaskRun always gives the
//! same Pod; steps get `TEKTITE_POD_NAME`/`TEKTITE_POD_NAMESPACE` from the
//! downward API, for the entrypoint's annotation report.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource,
    Pod, PodSpec, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;
use tektite_api::v1::{
    Sidecar, Step, StepTemplate, TaskRun, TaskSpec, WorkspaceBinding, WorkspaceDeclaration,
    WorkspaceUsage,
};
use tektite_entrypoint::contract as ep;

use crate::names;
use crate::params::{self, Failure};
use crate::quantity;
use crate::subst::Vars;

/// Settings of the installation (Tekton's `config-defaults` and images).
#[derive(Debug, Clone)]
pub struct Config {
    /// Image holding the static entrypoint at `/ko-app/entrypoint`.
    pub entrypoint_image: String,
    /// Image with a POSIX shell, for placing scripts and creating working dirs.
    pub shell_image: String,
    /// Timeout of a TaskRun that sets none (Tekton: 60 minutes).
    pub default_timeout: Duration,
    /// Service account of a TaskRun that names none.
    pub default_service_account: String,
    /// Largest result a step may write, in bytes.
    pub max_result_size: usize,
    /// Value of the `app.kubernetes.io/managed-by` label.
    pub managed_by: String,
    /// Value of the `pipeline.tekton.dev/release` annotation.
    pub release: String,
    /// Most TaskRuns a matrix may fan out to (Tekton: 256).
    pub max_matrix_combinations: usize,
    /// Most PipelineRuns that may run at once in one namespace (the
    /// others queue); `None`: no cap.
    pub max_running_pipeline_runs: Option<u32>,
    /// A queued run's timeouts count from its creation (true, as Tekton's
    /// pending runs) or from its start.
    pub queue_timeout_from_creation: bool,
    /// Runs are traced (`trace`): a pipeline's TaskRuns carry its span
    /// context, and steps get `TRACEPARENT`.
    pub tracing: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            entrypoint_image: "localhost/tektite/entrypoint:latest".into(),
            shell_image: "localhost/tektite/busybox:latest".into(),
            default_timeout: Duration::from_secs(3600),
            default_service_account: "default".into(),
            max_result_size: ep::DEFAULT_MAX_RESULT_SIZE,
            managed_by: "tektite".into(),
            release: env!("CARGO_PKG_VERSION").into(),
            max_matrix_combinations: 256,
            max_running_pipeline_runs: None,
            queue_timeout_from_creation: true,
            tracing: false,
        }
    }
}

/// The command an image runs (its config's `Entrypoint` and `Cmd`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageCommand {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// What the pod is built from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub task_run: &'a TaskRun,
    /// The resolved Task spec (from `taskRef` or `taskSpec`).
    pub spec: &'a TaskSpec,
    /// The referenced Task's name; `None` for an embedded spec.
    pub task_name: Option<&'a str>,
    /// Commands of the images of steps that have no `command`, by image.
    pub images: &'a BTreeMap<String, ImageCommand>,
}

/// The objects to create for a TaskRun.
#[derive(Debug, Clone)]
pub struct PodPlan {
    pub pod: Pod,
    /// Claims made from `volumeClaimTemplate` bindings (owned by the TaskRun).
    pub claims: Vec<PersistentVolumeClaim>,
    /// The spec after substitution (`status.taskSpec`).
    pub spec: TaskSpec,
}

/// Why no pod could be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// These images' commands must be looked up first (steps without `command`).
    NeedImages(Vec<String>),
    /// The TaskRun cannot run as written.
    Failed(Failure),
}

impl From<Failure> for BuildError {
    fn from(f: Failure) -> BuildError {
        BuildError::Failed(f)
    }
}

const VALIDATION: &str = "TaskRunValidationFailed";

fn fail(message: impl Into<String>) -> BuildError {
    BuildError::Failed(Failure::new(VALIDATION, message))
}

/// A binding as it is after substitution (params flow into both): its
/// claim is a claim's name and its subPath stays inside the volume, for
/// runtimes make directories of them.
fn check_binding(b: &WorkspaceBinding, at: &str) -> Result<(), String> {
    use tektite_api::validate::{claim_name_problem, sub_path_problem};
    if let Some(p) = b
        .persistent_volume_claim
        .as_ref()
        .and_then(|c| claim_name_problem(&c.claim_name))
    {
        return Err(format!("{at}.persistentVolumeClaim.claimName: {p}"));
    }
    if let Some(p) = b.sub_path.as_deref().and_then(sub_path_problem) {
        return Err(format!("{at}.subPath: {p}"));
    }
    Ok(())
}

/// The pod's name for a TaskRun on its `retry`-th retry (0: first attempt).
pub fn pod_name(task_run: &str, retry: usize) -> String {
    if retry == 0 {
        names::child(task_run, "-pod")
    } else {
        names::child(task_run, &format!("-pod-retry{retry}"))
    }
}

/// A container name cut to 63 characters, without a trailing non-alphanumeric.
fn restrict(name: &str) -> String {
    let mut n: String = name.chars().take(names::MAX).collect();
    while n.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        n.pop();
    }
    n
}

/// A Go `time.Duration` as Go prints it (`1h0m0s`, `1m30s`, `500ms`).
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_frac(nanos as f64 / 1e3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_frac(nanos as f64 / 1e6));
    }
    let secs = d.as_secs();
    let (h, m) = (secs / 3600, (secs % 3600) / 60);
    let s = trim_frac((secs % 60) as f64 + f64::from(d.subsec_nanos()) / 1e9);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn trim_frac(v: f64) -> String {
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The TaskRun's timeout: its own, else the default; `None` for `0` (none).
pub fn timeout(tr: &TaskRun, config: &Config) -> Option<Duration> {
    match tr.spec.timeout.as_deref().and_then(ep::parse_go_duration) {
        Some((_, d)) if d.is_zero() => None,
        Some((_, d)) => Some(d),
        None => Some(config.default_timeout),
    }
}

/// One workspace as the pod sees it.
#[derive(Debug, Clone)]
struct BoundWorkspace {
    decl: WorkspaceDeclaration,
    binding: Option<WorkspaceBinding>,
    volume: Option<String>,
}

fn step_name(step: &Step, i: usize) -> String {
    restrict(&ep::step_container_name(&step.name, i))
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// Builds the Pod (and claims) of a TaskRun.
///
/// # Errors
/// [`BuildError::NeedImages`] when steps without `command` use images whose
/// commands are not in `input.images`; [`BuildError::Failed`] for user errors
/// (missing params or workspaces, bad references), with Tekton's reason.
pub fn build(input: Input<'_>, config: &Config) -> Result<PodPlan, BuildError> {
    let tr = input.task_run;
    let id = Identity::of(&input);
    if input.spec.steps.is_empty() {
        return Err(fail(format!("{} has no steps", id.owner)));
    }
    let param_vars = param_vars(&input, &id.owner)?;
    let Bound { workspaces, claims } = bind_workspaces(&input, &param_vars, &id)?;
    let step_names = step_names(input.spec);
    let vars = task_vars(&param_vars, &input, &id, &step_names, &workspaces);
    let spec = substitute_spec(input.spec, &vars, &step_names, &workspaces)?;
    check_steps(&spec)?;
    let mounted = mount_workspaces(&spec, &workspaces);
    let mut steps = step_containers(&mounted, &spec, tr, &step_names);
    if config.tracing {
        add_traceparent(&mut steps, tr);
    }
    let mut sidecars = sidecar_containers(&mounted.sidecars, tr);
    let scripts = place_scripts(&mut steps, &mut sidecars, &mounted.sidecars);
    check_images(&steps, input.images)?;
    let shape = Shape {
        steps: steps.len(),
        scripts: !scripts.is_empty(),
        sidecars: !sidecars.is_empty(),
    };
    let steps = wrap_steps(steps, &Wrapping::new(&input, &spec, config, shape))?;
    let init = init_containers(config, &step_names, scripts, &steps);
    let volumes = pod_volumes(shape, &spec, mounted.volumes, tr)?;
    let mut pod_spec = pod_spec(tr, config, init, steps, sidecars, volumes);
    if let Some(pt) = pod_template(tr, &param_vars)? {
        apply_pod_template(&mut pod_spec, &pt);
    }
    let pod = Pod {
        metadata: pod_metadata(&input, &id, config, shape),
        spec: Some(pod_spec),
        status: None,
    };
    Ok(PodPlan { pod, claims, spec })
}

/// The TaskRun as the pod's names, labels, variables and messages speak of it.
struct Identity {
    name: String,
    namespace: String,
    uid: String,
    /// `task <name>` for a referenced Task, `TaskRun <name>` for an embedded spec.
    owner: String,
    /// Retries so far (0 on the first attempt).
    retry: usize,
}

impl Identity {
    fn of(input: &Input<'_>) -> Identity {
        let tr = input.task_run;
        let name = tr.metadata.name.clone().unwrap_or_default();
        let owner = match input.task_name {
            Some(n) => format!("task {n}"),
            None => format!("TaskRun {name}"),
        };
        Identity {
            namespace: tr
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            uid: tr.metadata.uid.clone().unwrap_or_default(),
            retry: tr.status.as_ref().map_or(0, |s| s.retries_status.len()),
            owner,
            name,
        }
    }
}

/// Params: the run's values over the Task's defaults, as `params.*` (and
/// `inputs.params.*`) variables.
fn param_vars(input: &Input<'_>, owner: &str) -> Result<Vars, BuildError> {
    let values = params::resolve(
        &input.spec.params,
        &input.task_run.spec.params,
        true,
        VALIDATION,
        owner,
    )?;
    let mut vars = Vars::new(&["params.", "inputs.params."]);
    params::add_to(&mut vars, &values);
    Ok(vars)
}

/// The workspaces as the pod sees them, and the claims their templates make.
struct Bound {
    workspaces: Vec<BoundWorkspace>,
    claims: Vec<PersistentVolumeClaim>,
}

/// Workspaces: each declaration with its binding (params substituted and
/// checked), a claim for each `volumeClaimTemplate` and a volume name.
fn bind_workspaces(
    input: &Input<'_>,
    param_vars: &Vars,
    id: &Identity,
) -> Result<Bound, BuildError> {
    let tr = input.task_run;
    let mut bound = Bound {
        workspaces: Vec::new(),
        claims: Vec::new(),
    };
    let mut volume_names = VolumeNames::default();
    for (wi, decl) in declared_workspaces(input.spec, tr)?.into_iter().enumerate() {
        let Some(b) = tr.spec.workspaces.iter().find(|b| b.name == decl.name) else {
            bound.workspaces.push(BoundWorkspace {
                decl,
                binding: None,
                volume: None,
            });
            continue;
        };
        let mut b = substitute_binding(b, wi, param_vars, &tr.spec.workspaces)?;
        if let Some(t) = b.volume_claim_template.take() {
            let claim = claim_from_template(&t, &b.name, id, tr);
            b.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.metadata.name.clone().unwrap_or_default(),
                read_only: None,
            });
            bound.claims.push(claim);
        }
        let volume = volume_names.for_binding(&b);
        bound.workspaces.push(BoundWorkspace {
            decl,
            binding: Some(b),
            volume: Some(volume),
        });
    }
    Ok(bound)
}

/// The Task's workspace declarations plus, for an embedded taskSpec only,
/// bindings it does not declare (Tekton propagates those; a referenced Task
/// refuses them); fails when a required workspace is not bound.
fn declared_workspaces(
    spec: &TaskSpec,
    tr: &TaskRun,
) -> Result<Vec<WorkspaceDeclaration>, BuildError> {
    let mut decls = spec.workspaces.clone();
    for b in &tr.spec.workspaces {
        if !decls.iter().any(|d| d.name == b.name) {
            if tr.spec.task_spec.is_none() {
                return Err(fail(format!(
                    "workspace binding {:?} does not match any declared workspace",
                    b.name
                )));
            }
            decls.push(WorkspaceDeclaration {
                name: b.name.clone(),
                ..Default::default()
            });
        }
    }
    let missing: Vec<&str> = decls
        .iter()
        .filter(|d| !d.optional && !tr.spec.workspaces.iter().any(|b| b.name == d.name))
        .map(|d| d.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(fail(format!(
            "bound workspaces did not match declared workspaces: didn't provide required values: [{}]",
            missing.join(" ")
        )));
    }
    Ok(decls)
}

/// A binding with params substituted (`wi`: its declaration's index), then
/// checked at its place among the TaskRun's bindings (`all`).
fn substitute_binding(
    b: &WorkspaceBinding,
    wi: usize,
    param_vars: &Vars,
    all: &[WorkspaceBinding],
) -> Result<WorkspaceBinding, BuildError> {
    let mut bj = serde_json::to_value(b).map_err(|e| fail(e.to_string()))?;
    param_vars
        .json(&mut bj, &format!("spec.workspaces[{wi}]"), &["name"])
        .map_err(|e| fail(e.to_string()))?;
    let b: WorkspaceBinding = serde_json::from_value(bj).map_err(|e| fail(e.to_string()))?;
    let at = all.iter().position(|x| x.name == b.name);
    check_binding(&b, &format!("spec.workspaces[{}]", at.unwrap_or(wi))).map_err(fail)?;
    Ok(b)
}

/// The claim a `volumeClaimTemplate` makes for the workspace `workspace`,
/// owned by the TaskRun.
fn claim_from_template(
    t: &PersistentVolumeClaim,
    workspace: &str,
    id: &Identity,
    tr: &TaskRun,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(names::claim(t.metadata.name.as_deref(), workspace, &id.uid)),
            namespace: Some(id.namespace.clone()),
            labels: t.metadata.labels.clone(),
            annotations: t.metadata.annotations.clone(),
            owner_references: Some(vec![owner_ref(tr)]),
            ..Default::default()
        },
        spec: t.spec.clone(),
        status: None,
    }
}

/// Names of the workspaces' volumes: bindings of one claim share a volume,
/// any other binding gets a hashed name of its own.
#[derive(Default)]
struct VolumeNames {
    used: BTreeSet<String>,
    by_claim: BTreeMap<String, String>,
}

impl VolumeNames {
    /// The volume name of the (substituted) binding `b`.
    fn for_binding(&mut self, b: &WorkspaceBinding) -> String {
        if let Some(existing) = b
            .persistent_volume_claim
            .as_ref()
            .and_then(|c| self.by_claim.get(&c.claim_name))
        {
            return existing.clone();
        }
        let mut key = b.name.clone();
        let mut name = names::hashed("ws", &key, 5);
        while self.used.contains(&name) {
            key.push('$');
            name = names::hashed("ws", &key, 5);
        }
        self.used.insert(name.clone());
        if let Some(c) = &b.persistent_volume_claim {
            self.by_claim.insert(c.claim_name.clone(), name.clone());
        }
        name
    }
}

/// The step containers' names, in order.
fn step_names(spec: &TaskSpec) -> Vec<String> {
    spec.steps
        .iter()
        .enumerate()
        .map(|(i, s)| step_name(s, i))
        .collect()
}

/// Where a bound workspace is mounted: its declared path, else under `/workspace`.
fn workspace_path(decl: &WorkspaceDeclaration) -> String {
    decl.mount_path
        .clone()
        .unwrap_or_else(|| format!("{}/{}", ep::WORKSPACE_DIR, decl.name))
}

/// Variables of the whole task: params, `context.*`, results, steps' exit
/// codes and workspaces.
fn task_vars(
    param_vars: &Vars,
    input: &Input<'_>,
    id: &Identity,
    step_names: &[String],
    workspaces: &[BoundWorkspace],
) -> Vars {
    let mut vars = param_vars.clone();
    for p in [
        "context.taskRun.",
        "context.task.",
        "results.",
        "workspaces.",
        "step.",
    ] {
        vars.strict(p);
    }
    vars.set_str("context.taskRun.name", &id.name);
    vars.set_str("context.taskRun.namespace", &id.namespace);
    vars.set_str("context.taskRun.uid", &id.uid);
    vars.set_str("context.task.name", input.task_name.unwrap_or(&id.name));
    vars.set_str("context.task.retry-count", id.retry.to_string());
    vars.set_str("credentials.path", "/tekton/creds");
    vars.set_str("artifacts.path", "/tekton/artifacts/provenance.json");
    for r in &input.spec.results {
        vars.set_str(
            format!("results.{}.path", r.name),
            format!("{}/{}", ep::RESULTS_DIR, r.name),
        );
    }
    for n in step_names {
        vars.set_str(
            format!("steps.{n}.exitCode.path"),
            format!("{}/{n}/exitCode", ep::STEPS_DIR),
        );
    }
    for w in workspaces {
        let n = &w.decl.name;
        let bound = w.binding.is_some();
        let path = if bound {
            workspace_path(&w.decl)
        } else {
            String::new()
        };
        vars.set_str(format!("workspaces.{n}.bound"), bound.to_string());
        vars.set_str(format!("workspaces.{n}.path"), path);
        vars.set_str(
            format!("workspaces.{n}.volume"),
            w.volume.clone().unwrap_or_default(),
        );
        let claim = w
            .binding
            .as_ref()
            .and_then(|b| b.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone())
            .unwrap_or_default();
        vars.set_str(format!("workspaces.{n}.claim"), claim);
    }
    vars
}

/// Fields Tekton does not substitute in a step or sidecar.
const NOT_SUBSTITUTED: &[&str] = &[
    "name",
    "displayName",
    "results",
    "computeResources",
    "securityContext",
    "timeout",
    "workspaces",
];

/// Substitutes the spec: each step and sidecar with its own view
/// (`step.results`, a workspace mounted at its own path).
fn substitute_spec(
    spec: &TaskSpec,
    vars: &Vars,
    step_names: &[String],
    workspaces: &[BoundWorkspace],
) -> Result<TaskSpec, BuildError> {
    let mut j = serde_json::to_value(spec).map_err(|e| fail(e.to_string()))?;
    let err = |e: crate::subst::SubstError| fail(e.to_string());
    if let Some(Value::Array(steps)) = j.get_mut("steps") {
        for (i, s) in steps.iter_mut().enumerate() {
            let v = step_vars(vars, &spec.steps[i], &step_names[i], workspaces);
            v.json(s, &format!("spec.steps[{i}]"), NOT_SUBSTITUTED)
                .map_err(err)?;
            crate::sources::substitute_names(s, &v, &format!("spec.steps[{i}]")).map_err(err)?;
        }
    }
    if let Some(Value::Array(sidecars)) = j.get_mut("sidecars") {
        for (i, s) in sidecars.iter_mut().enumerate() {
            let v = usage_vars(vars, &spec.sidecars[i].workspaces, workspaces);
            v.json(s, &format!("spec.sidecars[{i}]"), NOT_SUBSTITUTED)
                .map_err(err)?;
            crate::sources::substitute_names(s, &v, &format!("spec.sidecars[{i}]")).map_err(err)?;
        }
    }
    if let Some(t) = j.get_mut("stepTemplate") {
        vars.json(t, "spec.stepTemplate", NOT_SUBSTITUTED)
            .map_err(err)?;
        crate::sources::substitute_names(t, vars, "spec.stepTemplate").map_err(err)?;
    }
    if let Some(v) = j.get_mut("volumes") {
        vars.json(v, "spec.volumes", &[]).map_err(err)?;
    }
    if let Some(Value::Array(ws)) = j.get_mut("workspaces") {
        for (i, w) in ws.iter_mut().enumerate() {
            if let Some(p) = w.get_mut("mountPath") {
                vars.json(p, &format!("spec.workspaces[{i}].mountPath"), &[])
                    .map_err(err)?;
            }
        }
    }
    serde_json::from_value(j).map_err(|e| fail(format!("after substitution: {e}")))
}

/// `vars` as a step or sidecar sees them: a bound workspace it mounts at a
/// path of its own (`usages`) has that path.
fn usage_vars(vars: &Vars, usages: &[WorkspaceUsage], workspaces: &[BoundWorkspace]) -> Vars {
    let mut v = vars.clone();
    for u in usages {
        if let Some(p) = &u.mount_path
            && workspaces
                .iter()
                .any(|w| w.decl.name == u.name && w.binding.is_some())
        {
            v.set_str(format!("workspaces.{}.path", u.name), p.clone());
        }
    }
    v
}

/// `vars` as the step named `n` sees them: its workspace paths, its
/// `step.results.<name>.path` and `step.artifacts.path`.
fn step_vars(vars: &Vars, step: &Step, n: &str, workspaces: &[BoundWorkspace]) -> Vars {
    let mut v = usage_vars(vars, &step.workspaces, workspaces);
    for r in &step.results {
        v.set_str(
            format!("step.results.{}.path", r.name),
            format!("{}/{n}/results/{}", ep::STEPS_DIR, r.name),
        );
    }
    v.set_str(
        "step.artifacts.path",
        format!("{}/{n}/artifacts/provenance.json", ep::STEPS_DIR),
    );
    v
}

/// The substituted spec's step template, steps and sidecars with the
/// workspace mounts added, and the workspaces' volumes.
struct Mounted {
    template: StepTemplate,
    steps: Vec<Step>,
    sidecars: Vec<Sidecar>,
    volumes: Vec<Volume>,
}

/// Workspace mounts: only in the steps/sidecars that list the workspace,
/// else in every step (through the template) and sidecar.
fn mount_workspaces(spec: &TaskSpec, workspaces: &[BoundWorkspace]) -> Mounted {
    let mut out = Mounted {
        template: spec.step_template.clone().unwrap_or_default(),
        steps: spec.steps.clone(),
        sidecars: spec.sidecars.clone(),
        volumes: Vec::new(),
    };
    for w in workspaces {
        let (Some(b), Some(vol)) = (&w.binding, &w.volume) else {
            continue;
        };
        let name = &w.decl.name;
        let m = VolumeMount {
            name: vol.clone(),
            mount_path: workspace_path(&w.decl),
            sub_path: b.sub_path.clone().filter(|s| !s.is_empty()),
            read_only: w.decl.read_only.then_some(true),
            ..Default::default()
        };
        let isolated = out.steps.iter().any(|s| lists(&s.workspaces, name))
            || out.sidecars.iter().any(|s| lists(&s.workspaces, name));
        if isolated {
            for s in &mut out.steps {
                mount_if_listed(&s.workspaces, &mut s.volume_mounts, name, &m);
            }
            for s in &mut out.sidecars {
                mount_if_listed(&s.workspaces, &mut s.volume_mounts, name, &m);
            }
        } else {
            out.template.volume_mounts.push(m.clone());
            for s in &mut out.sidecars {
                if !s.volume_mounts.iter().any(|x| x.mount_path == m.mount_path) {
                    s.volume_mounts.push(m.clone());
                }
            }
        }
        if !out.volumes.iter().any(|v| &v.name == vol) {
            out.volumes.push(workspace_volume(vol, b));
        }
    }
    out
}

/// Whether a step's or sidecar's `workspaces` lists the workspace `name`.
fn lists(usages: &[WorkspaceUsage], name: &str) -> bool {
    usages.iter().any(|u| u.name == name)
}

/// Adds the mount `m` of workspace `name` when `usages` lists it, at the
/// path the usage gives, if any.
fn mount_if_listed(
    usages: &[WorkspaceUsage],
    mounts: &mut Vec<VolumeMount>,
    name: &str,
    m: &VolumeMount,
) {
    if let Some(u) = usages.iter().find(|u| u.name == name) {
        let mut m = m.clone();
        if let Some(p) = &u.mount_path {
            m.mount_path = p.clone();
        }
        mounts.push(m);
    }
}

/// Containers from steps: the stepTemplate merged in, `stepSpecs` and the
/// task-level compute resources applied; each beside its step.
fn step_containers<'s>(
    mounted: &Mounted,
    spec: &'s TaskSpec,
    tr: &TaskRun,
    step_names: &[String],
) -> Vec<(Container, &'s Step)> {
    let mut containers: Vec<(Container, &Step)> = Vec::new();
    for (i, s) in mounted.steps.iter().enumerate() {
        let mut c = merge_template(&mounted.template, s);
        c.name = step_names[i].clone();
        if let Some(o) = tr.spec.step_specs.iter().find(|o| o.name == s.name) {
            c.resources = Some(merge_resources(c.resources.take(), &o.compute_resources));
        }
        containers.push((c, &spec.steps[i]));
    }
    if let Some(task_res) = &tr.spec.compute_resources {
        apply_task_resources(&mut containers, task_res);
    }
    containers
}

/// `TRACEPARENT`, the TaskRun span's context, in every step's environment
/// (a step that sets it keeps its own).
fn add_traceparent(steps: &mut [(Container, &Step)], tr: &TaskRun) {
    let value = crate::trace::taskrun_context(tr).own.traceparent();
    for (c, _) in steps {
        let env = c.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.name == crate::trace::TRACEPARENT_ENV) {
            env.push(EnvVar {
                name: crate::trace::TRACEPARENT_ENV.into(),
                value: Some(value.clone()),
                ..Default::default()
            });
        }
    }
}

/// Containers from sidecars, `sidecarSpecs` applied.
fn sidecar_containers(sidecars: &[Sidecar], tr: &TaskRun) -> Vec<Container> {
    sidecars
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut c = sidecar_container(s, i);
            if let Some(o) = tr.spec.sidecar_specs.iter().find(|o| o.name == s.name) {
                c.resources = Some(merge_resources(c.resources.take(), &o.compute_resources));
            }
            c
        })
        .collect()
}

/// Scripts: a step or sidecar with a script runs it from a file under
/// `/tekton/scripts`. Returns the `place-scripts` text that writes them
/// (empty when there are none).
fn place_scripts(
    steps: &mut [(Container, &Step)],
    sidecars: &mut [Container],
    sidecar_specs: &[Sidecar],
) -> String {
    let mut blocks = String::new();
    for (i, (c, s)) in steps.iter_mut().enumerate() {
        if let Some(script) = s.script.as_deref().filter(|x| !x.is_empty()) {
            let file = format!("{}/script-{i}", ep::SCRIPTS_DIR);
            blocks.push_str(&script_block(&file, script));
            c.command = Some(vec![file]);
        }
    }
    for (i, (c, s)) in sidecars.iter_mut().zip(sidecar_specs).enumerate() {
        if let Some(script) = s.script.as_deref().filter(|x| !x.is_empty()) {
            let file = format!("{}/sidecar-script-{i}", ep::SCRIPTS_DIR);
            blocks.push_str(&script_block(&file, script));
            c.command = Some(vec![file]);
            push_mount(c, mount("tekton-internal-scripts", ep::SCRIPTS_DIR, true));
        }
    }
    blocks
}

/// Each step's `onError`, now that params are applied (it may be
/// `$(params.x)`): `continue` or `stopAndFail`, as the entrypoint takes;
/// and its `when` expressions, which the entrypoint evaluates: `in` or
/// `notin`, no CEL.
fn check_steps(spec: &TaskSpec) -> Result<(), BuildError> {
    for (i, s) in spec.steps.iter().enumerate() {
        for (j, w) in s.when.iter().enumerate() {
            if w.cel.as_deref().is_some_and(|c| !c.is_empty()) {
                return Err(fail(format!(
                    "spec.steps[{i}].when[{j}].cel: CEL in a step's when is not supported: use input, operator and values"
                )));
            }
            let op = w.operator.as_deref().unwrap_or("");
            if op != "in" && op != "notin" {
                return Err(fail(format!(
                    "spec.steps[{i}].when[{j}].operator: {op:?} is not in or notin"
                )));
            }
        }
        if let Some(v) = s.on_error.as_deref()
            && v != "continue"
            && v != "stopAndFail"
        {
            return Err(fail(format!(
                "task step onError must be either \"continue\" or \"stopAndFail\" but it is set to an invalid value {v:?}"
            )));
        }
    }
    Ok(())
}

/// Image commands: fails with the images to look up first when a step
/// without `command` uses an image not in `images`.
fn check_images(
    steps: &[(Container, &Step)],
    images: &BTreeMap<String, ImageCommand>,
) -> Result<(), BuildError> {
    let mut need: Vec<String> = Vec::new();
    for (c, _) in steps {
        if c.command.as_ref().is_none_or(Vec::is_empty) {
            let image = c.image.clone().unwrap_or_default();
            if !images.contains_key(&image) && !need.contains(&image) {
                need.push(image);
            }
        }
    }
    if need.is_empty() {
        Ok(())
    } else {
        Err(BuildError::NeedImages(need))
    }
}

/// What the pod holds, which its implicit volumes, mounts, flags and
/// annotations follow.
#[derive(Debug, Clone, Copy)]
struct Shape {
    steps: usize,
    /// Some step or sidecar has a script.
    scripts: bool,
    /// The pod has sidecars: the first step waits for the ready file.
    sidecars: bool,
}

/// What every step's wrapping in the entrypoint has in common.
struct Wrapping<'a> {
    shape: Shape,
    /// Commands of the images of steps without `command`.
    images: &'a BTreeMap<String, ImageCommand>,
    /// `-results`: the task's results the steps write; `None` when the task
    /// declares no results.
    task_results: Option<String>,
    max_result_size: usize,
    /// The pod template's environment, given to every step.
    pod_env: &'a [EnvVar],
}

impl<'a> Wrapping<'a> {
    fn new(input: &Input<'a>, spec: &TaskSpec, config: &Config, shape: Shape) -> Wrapping<'a> {
        let task_results = (!spec.results.is_empty()).then(|| {
            let written: Vec<&str> = spec
                .results
                .iter()
                .filter(|r| r.value.is_none())
                .map(|r| r.name.as_str())
                .collect();
            written.join(",")
        });
        Wrapping {
            shape,
            images: input.images,
            task_results,
            max_result_size: config.max_result_size,
            pod_env: input
                .task_run
                .spec
                .pod_template
                .as_ref()
                .map_or(&[], |pt| pt.env.as_slice()),
        }
    }
}

/// Wraps the steps in the entrypoint: each runs it with the flags that
/// order and report it, gets the pod's identity in its environment and the
/// internal mounts.
fn wrap_steps(
    steps: Vec<(Container, &Step)>,
    w: &Wrapping<'_>,
) -> Result<Vec<Container>, BuildError> {
    steps
        .into_iter()
        .enumerate()
        .map(|(i, (c, s))| wrap_step(i, c, s, w))
        .collect()
}

/// Step `i` wrapped in the entrypoint.
fn wrap_step(
    i: usize,
    mut c: Container,
    s: &Step,
    w: &Wrapping<'_>,
) -> Result<Container, BuildError> {
    let command = step_command(&mut c, w.images)?;
    c.command = Some(vec![ep::ENTRYPOINT.into()]);
    c.args = Some(entrypoint_args(i, s, &command, w));
    c.termination_message_path = Some(ep::TERMINATION_PATH.into());
    add_step_env(&mut c, w.pod_env);
    add_step_mounts(&mut c, i, s, w.shape);
    Ok(c)
}

/// What a step runs, taking its command and args out of `c`: its own
/// command and args, else what its image would run with the step's args.
fn step_command(
    c: &mut Container,
    images: &BTreeMap<String, ImageCommand>,
) -> Result<Vec<String>, BuildError> {
    let mut command = c.command.take().unwrap_or_default();
    let args = c.args.take().unwrap_or_default();
    if !command.is_empty() {
        command.extend(args);
        return Ok(command);
    }
    let image = c.image.clone().unwrap_or_default();
    let ic = &images[&image];
    // What the container would run without the wrapper.
    let full: Vec<String> = match (ic.entrypoint.is_empty(), args.is_empty()) {
        (false, true) => ic.entrypoint.iter().chain(&ic.cmd).cloned().collect(),
        (false, false) => ic.entrypoint.iter().chain(&args).cloned().collect(),
        (true, true) => ic.cmd.clone(),
        (true, false) => args,
    };
    if full.is_empty() {
        return Err(fail(format!(
            "step {:?}: image {image:?} has no entrypoint or command, and the step sets no command",
            c.name
        )));
    }
    Ok(full)
}

/// The entrypoint's arguments for step `i`: its flags, then `--` and what
/// the step runs (`command`, never empty).
fn entrypoint_args(i: usize, s: &Step, command: &[String], w: &Wrapping<'_>) -> Vec<String> {
    let mut flags: Vec<String> = Vec::new();
    if i == 0 {
        if w.shape.sidecars {
            flags.extend([
                "-wait_file".into(),
                ep::READY_FILE.into(),
                "-wait_file_content".into(),
            ]);
        }
    } else {
        flags.extend(["-wait_file".into(), ep::out_marker(i - 1)]);
    }
    flags.extend([
        "-post_file".into(),
        ep::out_marker(i),
        "-termination_path".into(),
        ep::TERMINATION_PATH.into(),
        "-step_metadata_dir".into(),
        ep::metadata_dir(i),
    ]);
    if let Some(on_error) = &s.on_error {
        flags.extend(["-on_error".into(), on_error.clone()]);
    }
    if !s.when.is_empty() {
        let when = serde_json::to_string(&s.when).unwrap_or_default();
        flags.extend(["-when_expressions".into(), when]);
    }
    if let Some(t) = &s.timeout
        && let Some((_, d)) = ep::parse_go_duration(t)
        && !d.is_zero()
    {
        flags.extend(["-timeout".into(), go_duration(d)]);
    }
    if let Some(p) = s.stdout_config.as_ref().and_then(|o| o.path.clone()) {
        flags.extend(["-stdout_path".into(), p]);
    }
    if let Some(p) = s.stderr_config.as_ref().and_then(|o| o.path.clone()) {
        flags.extend(["-stderr_path".into(), p]);
    }
    if !s.results.is_empty() {
        let names: Vec<&str> = s.results.iter().map(|r| r.name.as_str()).collect();
        flags.extend(["-step_results".into(), names.join(",")]);
    }
    if let Some(results) = &w.task_results {
        flags.extend(["-results".into(), results.clone()]);
    }
    if w.max_result_size != ep::DEFAULT_MAX_RESULT_SIZE {
        flags.extend(["-max_result_size".into(), w.max_result_size.to_string()]);
    }
    flags.extend(["-entrypoint".into(), command[0].clone(), "--".into()]);
    flags.extend(command[1..].iter().cloned());
    flags
}

/// Environment: the step's, the pod template's, then the pod's identity.
fn add_step_env(c: &mut Container, pod_env: &[EnvVar]) {
    let mut env = c.env.take().unwrap_or_default();
    env.extend(pod_env.iter().cloned());
    env.push(field_env(
        tektite_entrypoint::patch::POD_NAME_ENV,
        "metadata.name",
    ));
    env.push(field_env(
        tektite_entrypoint::patch::POD_NAMESPACE_ENV,
        "metadata.namespace",
    ));
    c.env = Some(env);
}

/// Mounts of step `i`, in Tekton's order: scripts, the ready file (first
/// step, with sidecars), credentials, every step's run directory (only its
/// own writable), then the implicit ones at paths the step leaves free.
fn add_step_mounts(c: &mut Container, i: usize, s: &Step, shape: Shape) {
    if s.script.as_deref().is_some_and(|x| !x.is_empty()) {
        push_mount(c, mount("tekton-internal-scripts", ep::SCRIPTS_DIR, true));
    }
    if i == 0 && shape.sidecars {
        push_mount(
            c,
            mount("tekton-internal-downward", "/tekton/downward", true),
        );
    }
    push_mount(
        c,
        mount(
            &format!("tekton-creds-init-home-{i}"),
            "/tekton/creds",
            false,
        ),
    );
    for j in 0..shape.steps {
        push_mount(
            c,
            mount(
                &format!("{RUN_VOLUME_PREFIX}{j}"),
                &format!("{}/{j}", ep::RUN_DIR),
                j != i,
            ),
        );
    }
    for (name, path, ro) in IMPLICIT_MOUNTS {
        let taken = c
            .volume_mounts
            .as_ref()
            .is_some_and(|ms| ms.iter().any(|m| clean(&m.mount_path) == *path));
        if !taken {
            push_mount(c, mount(name, path, *ro));
        }
    }
}

/// Init containers: `prepare` copies the entrypoint in, `place-scripts`
/// writes the scripts (if any), `working-dir-initializer` makes the steps'
/// working directories (if any).
fn init_containers(
    config: &Config,
    step_names: &[String],
    scripts: String,
    steps: &[Container],
) -> Vec<Container> {
    let mut init = Vec::new();
    let mut prepare_cmd = vec![
        "/ko-app/entrypoint".to_string(),
        "init".into(),
        "/ko-app/entrypoint".into(),
        ep::ENTRYPOINT.into(),
    ];
    prepare_cmd.extend(step_names.iter().cloned());
    init.push(Container {
        name: "prepare".into(),
        image: Some(config.entrypoint_image.clone()),
        command: Some(prepare_cmd),
        working_dir: Some("/".into()),
        volume_mounts: Some(vec![
            mount("tekton-internal-bin", ep::BIN_DIR, false),
            mount("tekton-internal-steps", ep::STEPS_DIR, false),
        ]),
        ..Default::default()
    });
    if !scripts.is_empty() {
        init.push(Container {
            name: "place-scripts".into(),
            image: Some(config.shell_image.clone()),
            command: Some(vec!["sh".into()]),
            args: Some(shell_args(scripts)),
            volume_mounts: Some(vec![
                mount("tekton-internal-scripts", ep::SCRIPTS_DIR, false),
                mount("tekton-internal-bin", ep::BIN_DIR, false),
            ]),
            ..Default::default()
        });
    }
    let dirs = working_dirs(steps);
    if !dirs.is_empty() {
        let mut cmd = vec!["mkdir".to_string(), "-p".into()];
        cmd.extend(dirs);
        init.push(Container {
            name: "working-dir-initializer".into(),
            image: Some(config.shell_image.clone()),
            command: Some(cmd),
            working_dir: Some(ep::WORKSPACE_DIR.into()),
            volume_mounts: Some(
                IMPLICIT_MOUNTS
                    .iter()
                    .filter(|(n, _, _)| *n != "tekton-internal-bin")
                    .map(|(n, p, ro)| mount(n, p, *ro))
                    .collect(),
            ),
            ..Default::default()
        });
    }
    init
}

/// Volumes, in Tekton's order: the internal ones, the Task's, the
/// workspaces', the pod template's; fails when two share a name.
fn pod_volumes(
    shape: Shape,
    spec: &TaskSpec,
    workspace_volumes: Vec<Volume>,
    tr: &TaskRun,
) -> Result<Vec<Volume>, BuildError> {
    let mut all = internal_volumes(shape);
    all.extend(spec.volumes.iter().cloned());
    all.extend(workspace_volumes);
    if let Some(pt) = &tr.spec.pod_template {
        all.extend(pt.volumes.iter().cloned());
    }
    let mut seen = BTreeSet::new();
    for v in &all {
        if !seen.insert(v.name.as_str()) {
            return Err(fail(format!(
                "multiple volumes with same name {:?}",
                v.name
            )));
        }
    }
    Ok(all)
}

/// The volumes of Tekton's layout: workspace, home, results, steps,
/// artifacts, scripts, bin, the ready file, and per step its credentials
/// and run directory.
fn internal_volumes(shape: Shape) -> Vec<Volume> {
    let mut all: Vec<Volume> = [
        "tekton-internal-workspace",
        "tekton-internal-home",
        "tekton-internal-results",
        "tekton-internal-steps",
        "tekton-internal-artifacts",
    ]
    .iter()
    .map(|n| empty_dir(n))
    .collect();
    if shape.scripts {
        all.push(empty_dir("tekton-internal-scripts"));
    }
    all.push(empty_dir("tekton-internal-bin"));
    if shape.sidecars {
        all.push(Volume {
            name: "tekton-internal-downward".into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "ready".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.annotations['tekton.dev/ready']".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    for i in 0..shape.steps {
        all.push(Volume {
            name: format!("tekton-creds-init-home-{i}"),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: None,
            }),
            ..Default::default()
        });
        all.push(empty_dir(&format!("{RUN_VOLUME_PREFIX}{i}")));
    }
    all
}

/// The pod spec: init containers, steps then sidecars, volumes, and a
/// deadline of 1.5 × the timeout.
fn pod_spec(
    tr: &TaskRun,
    config: &Config,
    init: Vec<Container>,
    steps: Vec<Container>,
    sidecars: Vec<Container>,
    volumes: Vec<Volume>,
) -> PodSpec {
    let deadline = match timeout(tr, config) {
        None => i64::from(i32::MAX),
        Some(d) => (d.as_secs_f64() * 1.5) as i64,
    };
    let mut containers = steps;
    containers.extend(sidecars);
    PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: Some(
            tr.spec
                .service_account_name
                .clone()
                .unwrap_or_else(|| config.default_service_account.clone()),
        ),
        active_deadline_seconds: Some(deadline),
        init_containers: Some(init),
        containers,
        volumes: Some(volumes),
        ..Default::default()
    }
}

/// The TaskRun's pod template with params substituted, if it has one.
fn pod_template(
    tr: &TaskRun,
    param_vars: &Vars,
) -> Result<Option<tektite_api::v1::PodTemplate>, BuildError> {
    let Some(pt) = &tr.spec.pod_template else {
        return Ok(None);
    };
    let mut ptj = serde_json::to_value(pt).map_err(|e| fail(e.to_string()))?;
    param_vars
        .json(&mut ptj, "spec.podTemplate", &[])
        .map_err(|e| fail(e.to_string()))?;
    serde_json::from_value(ptj)
        .map(Some)
        .map_err(|e| fail(e.to_string()))
}

/// The pod's metadata: its name, the TaskRun's labels and annotations with
/// Tekton's added, the TaskRun as owner.
fn pod_metadata(input: &Input<'_>, id: &Identity, config: &Config, shape: Shape) -> ObjectMeta {
    let tr = input.task_run;
    let mut labels = tr.metadata.labels.clone().unwrap_or_default();
    if let Some(t) = input.task_name {
        labels
            .entry("tekton.dev/task".into())
            .or_insert_with(|| t.to_string());
    }
    labels.insert("tekton.dev/taskRun".into(), id.name.clone());
    if !id.uid.is_empty() {
        labels.insert("tekton.dev/taskRunUID".into(), id.uid.clone());
    }
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        config.managed_by.clone(),
    );
    let mut annotations = tr.metadata.annotations.clone().unwrap_or_default();
    annotations.remove("app.kubernetes.io/managed-by");
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    // A run's trace context is the run's: its steps get it as TRACEPARENT
    // (and podman refuses annotation values over 63 bytes).
    annotations.retain(|k, _| !crate::trace::is_context(k));
    annotations.insert("pipeline.tekton.dev/release".into(), config.release.clone());
    if !shape.sidecars {
        annotations.insert("tekton.dev/ready".into(), "READY".into());
    }
    ObjectMeta {
        name: Some(pod_name(&id.name, id.retry)),
        namespace: Some(id.namespace.clone()),
        labels: Some(labels),
        annotations: Some(annotations),
        owner_references: Some(vec![owner_ref(tr)]),
        ..Default::default()
    }
}

/// The mounts every step gets unless it mounts something at that path.
const IMPLICIT_MOUNTS: &[(&str, &str, bool)] = &[
    ("tekton-internal-bin", ep::BIN_DIR, true),
    ("tekton-internal-workspace", ep::WORKSPACE_DIR, false),
    ("tekton-internal-home", ep::HOME_DIR, false),
    ("tekton-internal-results", ep::RESULTS_DIR, false),
    ("tekton-internal-steps", ep::STEPS_DIR, true),
    ("tekton-internal-artifacts", "/tekton/artifacts", false),
];

fn owner_ref(tr: &TaskRun) -> OwnerReference {
    OwnerReference {
        api_version: tektite_api::v1::API_VERSION.into(),
        kind: "TaskRun".into(),
        name: tr.metadata.name.clone().unwrap_or_default(),
        uid: tr.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

fn push_mount(c: &mut Container, m: VolumeMount) {
    c.volume_mounts.get_or_insert_with(Vec::new).push(m);
}

/// `path` without a trailing slash, `.` segments or doubled slashes.
fn clean(path: &str) -> String {
    let abs = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            x => parts.push(x),
        }
    }
    let joined = parts.join("/");
    if abs {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    }
}

/// Working directories to create before the steps: relative ones and those
/// under `/workspace/`, sorted and without repeats.
fn working_dirs(containers: &[Container]) -> Vec<String> {
    let mut dirs = BTreeSet::new();
    for c in containers {
        if let Some(w) = c.working_dir.as_deref().filter(|w| !w.is_empty()) {
            let p = clean(w);
            if !p.starts_with('/') || p.starts_with("/workspace/") {
                dirs.insert(p);
            }
        }
    }
    dirs.into_iter().collect()
}

/// Step `i`'s run directory volume is `tekton-internal-run-<i>` (Tekton's
/// name), mounted at `/tekton/run/<i>` in every step.
pub const RUN_VOLUME_PREFIX: &str = "tekton-internal-run-";

/// The longest argument handed to `sh -c` in one piece: Linux refuses to
/// exec with an argument over 128 KiB (MAX_ARG_STRLEN), which a big script
/// (base64 makes it a third bigger) would pass.
pub const MAX_SHELL_ARG: usize = 64 * 1024;

/// `-c TEXT` for `sh`; a longer text is passed in pieces that the shell
/// joins back and evaluates (with IFS empty, `"$*"` is the pieces' plain
/// concatenation), so scripts of any size can be placed.
pub fn shell_args(text: String) -> Vec<String> {
    if text.len() <= MAX_SHELL_ARG {
        return vec!["-c".into(), text];
    }
    let mut args = vec![
        "-c".to_string(),
        "IFS=; eval \"$*\"".into(),
        "place-scripts".into(),
    ];
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(MAX_SHELL_ARG);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        args.push(piece.to_string());
        rest = tail;
    }
    args
}

/// The text of a `sh` command built by [`shell_args`], whole again.
pub fn shell_text(args: &[String]) -> Option<String> {
    match args {
        [c, text] if c == "-c" => Some(text.clone()),
        [c, _, _, pieces @ ..] if c == "-c" => Some(pieces.concat()),
        _ => None,
    }
}

/// The `place-scripts` block for one script: written base64 (no quoting
/// problems), then decoded in place by the entrypoint.
fn script_block(file: &str, script: &str) -> String {
    let text = if script.trim_start().starts_with("#!") {
        script.to_string()
    } else {
        format!("#!/bin/sh\nset -e\n{script}")
    };
    scripts_text(&[(file.to_string(), text.into_bytes())], ep::ENTRYPOINT)
}

/// The `place-scripts` text that writes each of `scripts` (a file and its
/// whole text) and has `entrypoint` decode it in place: what
/// [`placed_scripts`] reads back (with the engine's entrypoint path).
pub fn scripts_text(scripts: &[(String, Vec<u8>)], entrypoint: &str) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for (file, text) in scripts {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        out.push_str(&format!(
            "scriptfile=\"{file}\"\ntouch ${{scriptfile}} && chmod +x ${{scriptfile}}\n\
             cat > ${{scriptfile}} << '_EOF_'\n{encoded}\n_EOF_\n\
             {entrypoint} decode-script \"${{scriptfile}}\"\n"
        ));
    }
    out
}

/// The scripts a `place-scripts` text made of [`script_block`]s writes:
/// each file (directly under [`ep::SCRIPTS_DIR`]) with its decoded text, in
/// order. `None` when the text is anything else, so that a runtime placing
/// them itself does so only for exactly what the engine wrote.
pub fn placed_scripts(text: &str) -> Option<Vec<(String, Vec<u8>)>> {
    use base64::Engine as _;
    let mut lines = text.lines();
    let mut placed = Vec::new();
    while let Some(first) = lines.next() {
        let file = first.strip_prefix("scriptfile=\"")?.strip_suffix('"')?;
        let name = file.strip_prefix(ep::SCRIPTS_DIR)?.strip_prefix('/')?;
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return None;
        }
        let expected = [
            "touch ${scriptfile} && chmod +x ${scriptfile}",
            "cat > ${scriptfile} << '_EOF_'",
        ];
        for e in expected {
            (lines.next()? == e).then_some(())?;
        }
        let encoded = lines.next()?;
        (lines.next()? == "_EOF_").then_some(())?;
        let decode = format!("{} decode-script \"${{scriptfile}}\"", ep::ENTRYPOINT);
        (lines.next()? == decode).then_some(())?;
        let text = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        placed.push((file.to_string(), text));
    }
    Some(placed)
}

fn workspace_volume(name: &str, b: &WorkspaceBinding) -> Volume {
    Volume {
        name: name.into(),
        persistent_volume_claim: b.persistent_volume_claim.clone(),
        empty_dir: b.empty_dir.clone(),
        config_map: b.config_map.clone(),
        secret: b.secret.clone(),
        projected: b.projected.clone(),
        csi: b.csi.clone(),
        ..Default::default()
    }
}

/// Merges list items by key the way a strategic merge patch orders them:
/// the step's items in order, each template-only item placed before the
/// first later step item the template also has after it, else at the end.
fn merge_keyed<T: Clone>(template: &[T], step: &[T], key: impl Fn(&T) -> String) -> Vec<T> {
    let step_keys: Vec<String> = step.iter().map(&key).collect();
    let template_keys: Vec<String> = template.iter().map(&key).collect();
    let mut out: Vec<T> = step.to_vec();
    let mut out_keys = step_keys.clone();
    let mut from = 0;
    for (ti, t) in template.iter().enumerate() {
        let k = &template_keys[ti];
        if step_keys.contains(k) {
            continue;
        }
        let later = |ok: &String| template_keys[ti + 1..].contains(ok) && step_keys.contains(ok);
        let pos = (from..out.len())
            .find(|&p| later(&out_keys[p]))
            .unwrap_or(out.len());
        out.insert(pos, t.clone());
        out_keys.insert(pos, k.clone());
        from = pos + 1;
    }
    out
}

/// Deep-merges two JSON objects; `over` wins.
fn merge_json(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(bv) if bv.is_object() && v.is_object() => merge_json(bv, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn merge_struct<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(
    base: Option<&T>,
    over: Option<&T>,
) -> Option<T> {
    match (base, over) {
        (None, o) => o.cloned(),
        (b, None) => b.cloned(),
        (Some(b), Some(o)) => {
            let (Ok(mut bj), Ok(oj)) = (serde_json::to_value(b), serde_json::to_value(o)) else {
                return Some(o.clone());
            };
            merge_json(&mut bj, &oj);
            serde_json::from_value(bj).ok().or_else(|| Some(o.clone()))
        }
    }
}

fn non_empty<T: Clone>(step: &[T], template: &[T]) -> Option<Vec<T>> {
    let v = if step.is_empty() { template } else { step };
    (!v.is_empty()).then(|| v.to_vec())
}

/// A step container from the step over the stepTemplate.
fn merge_template(t: &StepTemplate, s: &Step) -> Container {
    Container {
        name: s.name.clone(),
        image: s.image.clone().or_else(|| t.image.clone()),
        command: non_empty(&s.command, &t.command),
        args: non_empty(&s.args, &t.args),
        working_dir: s.working_dir.clone().or_else(|| t.working_dir.clone()),
        env_from: non_empty(&s.env_from, &t.env_from),
        env: Some(merge_keyed(&t.env, &s.env, |e| e.name.clone())).filter(|v| !v.is_empty()),
        resources: merge_struct(t.compute_resources.as_ref(), s.compute_resources.as_ref()),
        volume_mounts: Some(merge_keyed(&t.volume_mounts, &s.volume_mounts, |m| {
            m.mount_path.clone()
        }))
        .filter(|v| !v.is_empty()),
        volume_devices: Some(merge_keyed(&t.volume_devices, &s.volume_devices, |d| {
            d.device_path.clone()
        }))
        .filter(|v| !v.is_empty()),
        image_pull_policy: s
            .image_pull_policy
            .clone()
            .or_else(|| t.image_pull_policy.clone()),
        security_context: merge_struct(t.security_context.as_ref(), s.security_context.as_ref()),
        ..Default::default()
    }
}

/// A sidecar's container, named `sidecar-<name>`, or `sidecar-unnamed-<i>`
/// when it has no name (as steps are).
fn sidecar_container(s: &Sidecar, i: usize) -> Container {
    let name = if s.name.is_empty() {
        format!("sidecar-unnamed-{i}")
    } else {
        format!("sidecar-{}", s.name)
    };
    Container {
        name: restrict(&name),
        image: s.image.clone(),
        command: (!s.command.is_empty()).then(|| s.command.clone()),
        args: (!s.args.is_empty()).then(|| s.args.clone()),
        working_dir: s.working_dir.clone(),
        ports: (!s.ports.is_empty()).then(|| s.ports.clone()),
        env_from: (!s.env_from.is_empty()).then(|| s.env_from.clone()),
        env: (!s.env.is_empty()).then(|| s.env.clone()),
        resources: s.compute_resources.clone(),
        volume_mounts: (!s.volume_mounts.is_empty()).then(|| s.volume_mounts.clone()),
        volume_devices: (!s.volume_devices.is_empty()).then(|| s.volume_devices.clone()),
        liveness_probe: s.liveness_probe.clone(),
        readiness_probe: s.readiness_probe.clone(),
        startup_probe: s.startup_probe.clone(),
        lifecycle: s.lifecycle.clone(),
        termination_message_path: s.termination_message_path.clone(),
        termination_message_policy: s.termination_message_policy.clone(),
        image_pull_policy: s.image_pull_policy.clone(),
        security_context: s.security_context.clone(),
        stdin: s.stdin.then_some(true),
        stdin_once: s.stdin_once.then_some(true),
        tty: s.tty.then_some(true),
        ..Default::default()
    }
}

/// `stepSpecs` overrides: requests and limits merged key by key, the override winning.
fn merge_resources(
    base: Option<ResourceRequirements>,
    over: &ResourceRequirements,
) -> ResourceRequirements {
    let mut r = base.unwrap_or_default();
    for (dst, src) in [
        (&mut r.requests, &over.requests),
        (&mut r.limits, &over.limits),
    ] {
        if let Some(src) = src {
            let d = dst.get_or_insert_with(BTreeMap::new);
            for (k, v) in src {
                d.insert(k.clone(), v.clone());
            }
        }
    }
    r
}

/// A TaskRun's `computeResources`: its requests are split evenly across the
/// steps (the pod asks for the task's total, not N times it); every step gets
/// the task's limits.
fn apply_task_resources(containers: &mut [(Container, &Step)], task: &ResourceRequirements) {
    if task.requests.is_none() && task.limits.is_none() {
        return;
    }
    let n = containers.len();
    let split = |m: &BTreeMap<String, Quantity>| -> BTreeMap<String, Quantity> {
        m.iter()
            .map(|(k, q)| (k.clone(), quantity::divide(k, q, n)))
            .collect()
    };
    for (c, _) in containers.iter_mut() {
        let r = c.resources.get_or_insert_with(Default::default);
        r.requests = match (&task.requests, &r.requests, &task.limits) {
            (Some(req), _, _) => Some(split(req)),
            (None, None, Some(lim)) => Some(split(lim)),
            (None, _, _) => r.requests.take(),
        };
        if let Some(lim) = &task.limits {
            r.limits = Some(lim.clone());
        }
    }
}

fn apply_pod_template(spec: &mut PodSpec, pt: &tektite_api::v1::PodTemplate) {
    if !pt.node_selector.is_empty() {
        spec.node_selector = Some(pt.node_selector.clone());
    }
    if !pt.tolerations.is_empty() {
        spec.tolerations = Some(pt.tolerations.clone());
    }
    spec.affinity = pt.affinity.clone();
    spec.security_context = pt.security_context.clone();
    spec.runtime_class_name = pt.runtime_class_name.clone();
    spec.automount_service_account_token = pt.automount_service_account_token;
    spec.dns_policy = pt.dns_policy.clone();
    spec.dns_config = pt.dns_config.clone();
    spec.enable_service_links = pt.enable_service_links;
    spec.priority_class_name = pt.priority_class_name.clone();
    spec.scheduler_name = pt.scheduler_name.clone();
    if !pt.image_pull_secrets.is_empty() {
        spec.image_pull_secrets = Some(pt.image_pull_secrets.clone());
    }
    if !pt.host_aliases.is_empty() {
        spec.host_aliases = Some(pt.host_aliases.clone());
    }
    if pt.host_network {
        spec.host_network = Some(true);
    }
    spec.host_users = pt.host_users;
    if !pt.topology_spread_constraints.is_empty() {
        spec.topology_spread_constraints = Some(pt.topology_spread_constraints.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(5430)), "1h30m30s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn placed_scripts_are_read_back_from_the_text_that_writes_them() {
        let text = [
            script_block("/tekton/scripts/script-0", "echo one\n"),
            script_block(
                "/tekton/scripts/sidecar-script-0",
                "#!/usr/bin/env python3\nprint(2)",
            ),
        ]
        .concat();
        let placed = placed_scripts(&text).expect("the engine's own text");
        assert_eq!(
            placed,
            [
                (
                    "/tekton/scripts/script-0".to_string(),
                    b"#!/bin/sh\nset -e\necho one\n".to_vec()
                ),
                (
                    "/tekton/scripts/sidecar-script-0".to_string(),
                    b"#!/usr/bin/env python3\nprint(2)".to_vec()
                ),
            ]
        );
        assert_eq!(placed_scripts(""), Some(vec![]));
        // Anything but the engine's blocks is not read as scripts.
        let extra = format!("{text}rm -rf /\n");
        assert_eq!(placed_scripts(&extra), None);
        for file in [
            "/tekton/scripts/../x",
            "/tekton/scripts/a/b",
            "/etc/x",
            "/tekton/scripts/",
        ] {
            assert_eq!(placed_scripts(&script_block(file, "true")), None, "{file}");
        }
        let broken = script_block("/tekton/scripts/s", "true").replace("IyEv", "!!!!");
        assert_eq!(placed_scripts(&broken), None);
    }

    #[test]
    fn template_items_are_placed_like_a_strategic_merge() {
        let t = ["KEEP_THIS", "SOME_KEY"].map(String::from);
        let s = ["NEW_KEY", "SOME_KEY"].map(String::from);
        assert_eq!(
            merge_keyed(&t, &s, Clone::clone),
            ["NEW_KEY", "KEEP_THIS", "SOME_KEY"]
        );
        let t = ["A", "B"].map(String::from);
        let s = ["C"].map(String::from);
        assert_eq!(merge_keyed(&t, &s, Clone::clone), ["C", "A", "B"]);
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean("/workspace/"), "/workspace");
        assert_eq!(clean("/a/./b/../c"), "/a/c");
        assert_eq!(clean("src"), "src");
    }
}
