//! Making the TaskRuns of a pipeline task (and the claims of the run's
//! `volumeClaimTemplate` workspaces) from the run, its `taskRunTemplate`
//! and `taskRunSpecs`, and the resolved pipeline task.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use tektite_api::param::ParamValue;
use tektite_api::v1::{
    Param, PipelineRun, PipelineTask, PipelineTaskRunSpec, PodTemplate, TaskRun, TaskRunSpec,
    TaskSpec, WorkspaceBinding, WorkspacePipelineTaskBinding,
};

use super::{dur, on_error_continue, reason};
use crate::matrix;
use crate::names;
use crate::params::Failure;
use crate::pod::{Config, go_duration};
use crate::status::ON_ERROR_ANNOTATION;
use crate::subst::Vars;

pub(super) fn uses_claim_template(pr: &PipelineRun, pt: &PipelineTask) -> bool {
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
pub(super) fn claims(pr: &PipelineRun) -> Vec<PersistentVolumeClaim> {
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
pub(super) fn make_task_runs(
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
    let mut annotations = annotations(pr, pt, trs_spec);
    if config.tracing {
        let own = crate::trace::pipelinerun_context(pr).own;
        annotations.insert(crate::trace::TASKRUN_SPAN_CONTEXT.into(), own.carrier());
    }
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
                .and_then(crate::remote::task_ref_key)
                .and_then(|k| tasks.get(&k))
        })?;
        spec.workspaces
            .iter()
            .find(|w| w.name == name)
            .map(|w| w.optional)
    };
    let mut workspaces = Vec::new();
    for w in pt.workspaces.iter().chain(&propagated_workspaces(pt)) {
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

/// Tekton's workspace propagation: the workspaces an embedded taskSpec's
/// steps, sidecars and step template refer to (`$(workspaces.<w>.…)`) that
/// the pipeline task does not bind are bound to the run's workspace of the
/// same name.
pub(super) fn propagated_workspaces(pt: &PipelineTask) -> Vec<WorkspacePipelineTaskBinding> {
    let Some(spec) = pt.task_spec.as_ref().map(|e| &e.task) else {
        return Vec::new();
    };
    let mut text = String::new();
    for part in [
        serde_json::to_string(&spec.steps),
        serde_json::to_string(&spec.sidecars),
        serde_json::to_string(&spec.step_template),
    ] {
        text.push_str(&part.unwrap_or_default());
    }
    let mut used: Vec<String> = Vec::new();
    for expr in tektite_api::refs::scan(&text) {
        let Some(name) = expr
            .strip_prefix("workspaces.")
            .and_then(|rest| rest.split('.').next())
        else {
            continue;
        };
        if !used.iter().any(|u| u == name) && !pt.workspaces.iter().any(|w| w.name == name) {
            used.push(name.to_string());
        }
    }
    used.into_iter()
        .map(|name| WorkspacePipelineTaskBinding {
            name,
            ..Default::default()
        })
        .collect()
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
/// run's (but Chains', kubectl's and a rerun's records),
/// then the embedded spec's (earlier wins); `onError: continue` marked.
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
            && !crate::reuse::is_record(&k)
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
    // A trace context is the run's own, whoever wrote it where: the
    // TaskRun gets its PipelineRun's (`trace`), when traced.
    annotations.retain(|k, _| !crate::trace::is_context(k));
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
