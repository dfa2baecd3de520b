//! Variables of a pipeline task: the pipeline's params and context applied
//! to the spec once, then the results (and, for finally tasks, the
//! statuses) of other tasks applied to a task about to run, and its `when`
//! evaluated.

use std::collections::BTreeMap;

use tektite_api::param::ParamValue;
use tektite_api::v1::{Param, PipelineSpec, PipelineTask, WhenExpression};

use super::{State, Task, cond, on_error_continue};
use crate::matrix;
use crate::subst::Vars;

/// The results of done tasks (`tasks.<t>.results.<r>`, matrix results
/// gathered into arrays) and, for finally tasks (`finally_from` = the
/// number of DAG tasks), `tasks.<t>.status|reason` and `tasks.status`.
pub(super) fn result_vars(tasks: &[Task<'_>], base: &Vars, finally_from: Option<usize>) -> Vars {
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

pub(super) fn when_allows(when: &[WhenExpression], vars: &Vars) -> bool {
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

pub(super) enum Unresolved {
    /// Results of a task that was skipped, or that failed: skip the consumer.
    Skip,
    /// A task that succeeded did not emit a referenced result.
    Invalid(String),
}

/// The PipelineTask with its task results (and finally variables) substituted.
pub(super) fn resolve_task(
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
        let mut lenient = inline_vars(vars, &pt.params);
        lenient.clear_strict();
        lenient.strict("tasks.");
        if let Err(e) = substitute_inline_spec(spec, &lenient) {
            return Err(classify(&e, pt, tasks));
        }
    }
    serde_json::from_value(j).map_err(|_| Unresolved::Skip)
}

/// An inline spec, its steps' params (given to StepActions) keeping their
/// types as PipelineTask params do.
fn substitute_inline_spec(spec: &mut serde_json::Value, vars: &Vars) -> Result<(), String> {
    let held = take_step_params(spec);
    vars.json(spec, "taskSpec", &["name"])
        .map_err(|e| e.to_string())?;
    if let Some(serde_json::Value::Array(steps)) = spec.get_mut("steps") {
        for (s, p) in steps.iter_mut().zip(held) {
            if let (Some(mut p), Some(m)) = (p, s.as_object_mut()) {
                substitute_params(&mut p, vars)?;
                m.insert("params".into(), p);
            }
        }
    }
    Ok(())
}

/// Takes each step's `params` out of a spec (in step order).
fn take_step_params(spec: &mut serde_json::Value) -> Vec<Option<serde_json::Value>> {
    match spec.get_mut("steps") {
        Some(serde_json::Value::Array(steps)) => steps
            .iter_mut()
            .map(|s| s.as_object_mut().and_then(|m| m.remove("params")))
            .collect(),
        _ => Vec::new(),
    }
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

/// The variables an embedded taskSpec takes from its pipeline: all but the
/// params its pipeline task passes, which are the task's (Tekton's scope
/// precedence) and stay for the TaskRun, which gets their values.
fn inline_vars(vars: &Vars, passed: &[Param]) -> Vars {
    let mut inline = vars.clone();
    for p in passed {
        inline.remove(&format!("params.{}", p.name));
        inline.remove(&format!("inputs.params.{}", p.name));
    }
    inline
}

/// Applies pipeline-level variables to every pipeline task.
pub(super) fn substitute_pipeline(
    spec: &PipelineSpec,
    vars: &Vars,
) -> Result<PipelineSpec, String> {
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
        // Implicit propagation: pipeline values reach inline specs.
        let mut lenient = inline_vars(vars, &t.params);
        lenient.clear_strict();
        let held: Vec<Vec<Param>> = e
            .task
            .steps
            .iter_mut()
            .map(|s| std::mem::take(&mut s.params))
            .collect();
        let mut j = serde_json::to_value(&e.task).unwrap_or_default();
        lenient.json(&mut j, &format!("{path}.taskSpec"), &["name"])?;
        if let Ok(task) = serde_json::from_value(j) {
            e.task = task;
        }
        // Step params (given to StepActions) keep their types.
        for (i, (s, mut ps)) in e.task.steps.iter_mut().zip(held).enumerate() {
            for (k, p) in ps.iter_mut().enumerate() {
                let at = format!("{path}.taskSpec.steps[{i}].params[{k}].value");
                p.value = lenient.param_value(&p.value, &at)?;
            }
            s.params = ps;
        }
    }
    Ok(())
}
