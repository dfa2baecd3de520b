//! Checking a run against its pipeline before anything runs: the pipeline
//! could be resolved, params are given and typed, workspaces bound,
//! `taskRunSpecs` name real tasks, the tasks form a DAG and exist; then the
//! run's params and context applied to the pipeline.

use std::collections::{BTreeMap, BTreeSet};

use tektite_api::dag::{self, Dag};
use tektite_api::param::ParamValue;
use tektite_api::v1::{PipelineRun, PipelineSpec, TaskSpec};

use super::resolve::substitute_pipeline;
use super::{Run, reason};
use crate::params::{self, Failure};
use crate::subst::Vars;

/// The pipeline a run goes ahead with, once checked against the run.
pub(super) struct Pipeline<'a> {
    /// As written: what pipeline tasks are resolved from for their
    /// TaskRuns.
    pub(super) raw: &'a PipelineSpec,
    /// With the run's params and context applied.
    pub(super) spec: PipelineSpec,
    /// `tekton.dev/pipeline`: the Pipeline's name, else the run's.
    pub(super) label: String,
    /// The run's params, context and `workspaces.<w>.bound`.
    pub(super) vars: Vars,
    pub(super) graph: Dag,
}

impl<'a> Pipeline<'a> {
    /// Checks the run against its pipeline, the first problem failing the
    /// run (resolution, params, bindings, tasks), and applies the run's
    /// params and context to it.
    pub(super) fn check(
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
        check_on_error(&spec, &pl)?;
        // Tasks from resolvers are known by their params, the run's values in.
        missing_task(spec.tasks.iter().chain(&spec.finally), specs, &pl, true)?;
        Ok(Pipeline {
            raw,
            spec,
            label,
            vars,
            graph,
        })
    }
}

/// Each pipeline task's `onError`, now that params are applied (it may be
/// `$(params.x)`): `continue` or `stopAndFail`.
fn check_on_error(spec: &PipelineSpec, pl: &str) -> Result<(), Failure> {
    for (list, tasks) in [("tasks", &spec.tasks), ("finally", &spec.finally)] {
        for (i, t) in tasks.iter().enumerate() {
            if let Some(v) = t.on_error.as_deref()
                && v != "continue"
                && v != "stopAndFail"
            {
                return Err(Failure::new(
                    reason::VALIDATION_FAILED,
                    format!(
                        "Pipeline {pl} can't be Run; it has an invalid spec: invalid value: {v:?}: {list}[{i}].onError: PipelineTask onError must be either \"continue\" or \"stopAndFail\""
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The run's param values for its pipeline (a run's object replaces the
/// default object whole); fails on params missing, of the wrong type, or
/// objects missing keys.
pub(super) fn check_params(
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
    missing_task(all_tasks(), specs, pl, false)?;
    Ok(graph)
}

/// The first Task of `tasks` that `specs` lacks, as `CouldntGetTask`:
/// those named, or (`remote`) those from resolvers.
fn missing_task<'t>(
    tasks: impl Iterator<Item = &'t tektite_api::v1::PipelineTask>,
    specs: &BTreeMap<String, TaskSpec>,
    pl: &str,
    remote: bool,
) -> Result<(), Failure> {
    let missing: BTreeSet<String> = tasks
        .filter_map(|t| crate::remote::task_ref_key(t.task_ref.as_ref()?))
        .filter(|n| crate::remote::is_remote(n) == remote && !specs.contains_key(n))
        // A ref that uses a task result is resolved by its TaskRun.
        .filter(|n| !(remote && n.contains("$(")))
        .collect();
    let Some(n) = missing.first() else {
        return Ok(());
    };
    let why = if remote {
        format!("{} was not resolved", crate::remote::describe(n))
    } else {
        format!("tasks.tekton.dev {n:?} not found")
    };
    let n = crate::remote::describe(n);
    Err(Failure::new(
        reason::COULDNT_GET_TASK,
        format!(
            "Pipeline {pl} can't be Run; it contains Tasks that don't exist: Couldn't retrieve Task {n:?}: {why}"
        ),
    ))
}

/// Pipeline-level variables: params, `context.pipelineRun.*`,
/// `context.pipeline.name`, `workspaces.<w>.bound`.
pub(super) fn pipeline_vars(
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
