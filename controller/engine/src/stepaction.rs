//! Steps that run a StepAction (`ref: {name}`) made into ordinary steps,
//! before the pod is built: Tekton's resolution of step refs.
//!
//! Each executor finds the StepActions a Task spec names (the given files
//! and folders locally, the API server on a cluster) and hands them here
//! with the TaskRun; [`inline`] returns the spec with every `ref` replaced
//! by the StepAction's image, command, args, script, env, working dir,
//! volume mounts, security context and results, its params substituted.
//!
//! Params follow Tekton's precedence: the TaskRun's (and Task's default)
//! values are first substituted into the step's `params`; then each
//! StepAction param takes the step's value, else its default (a default
//! may use other params of the StepAction); an object value keeps the
//! default's other keys. A value that is a whole step-result reference
//! (`$(steps.<step>.results.<r>)`, `…[*]`) is passed on as a reference, for
//! the entrypoint to read when the step starts. Other variables
//! (`$(workspaces.…)`, `$(context.…)`, `$(step.results.<r>.path)`) are left
//! for the pod build, where the stepTemplate is also merged in.
//!
//! Failures are Tekton's: `TaskRunResolutionFailed`, with
//! `failed to resolve step ref for step "<name>" (index <i>): …`.

use std::collections::BTreeMap;

use tektite_api::param::ParamValue;
use tektite_api::refs::{self, Part};
use tektite_api::stepaction::StepActionSpec;
use tektite_api::v1::{ParamSpec, Step, StepRef, TaskRun, TaskSpec};

use crate::params::{Failure, declared_kind};
use crate::subst::Vars;

/// The reason a TaskRun fails with when a step's StepAction cannot be used.
pub const RESOLUTION_FAILED: &str = "TaskRunResolutionFailed";

/// StepActions by name.
pub type StepActions = BTreeMap<String, StepActionSpec>;

/// The names of the StepActions the steps of `spec` refer to, in order
/// (those referred to through a resolver are not named).
pub fn referenced(spec: &TaskSpec) -> Vec<&str> {
    spec.steps
        .iter()
        .filter_map(|s| s.step_ref.as_ref())
        .filter(|r| r.resolver.is_none())
        .filter_map(|r| r.name.as_deref())
        .collect()
}

/// The spec with every step that has a `ref` replaced by its StepAction,
/// for the TaskRun `tr` (whose params reach the steps' params). A spec
/// without refs comes back as it is.
///
/// # Errors
/// `TaskRunResolutionFailed`: a StepAction not in `actions` (or named
/// through a resolver), params the StepAction does not declare or lacks,
/// a value of the wrong type, defaults that refer to each other in a
/// circle or to no param.
pub fn inline(spec: &TaskSpec, tr: &TaskRun, actions: &StepActions) -> Result<TaskSpec, Failure> {
    if spec.steps.iter().all(|s| s.step_ref.is_none()) {
        return Ok(spec.clone());
    }
    let task_vars = task_param_vars(spec, tr);
    let mut out = spec.clone();
    for (i, step) in spec.steps.iter().enumerate() {
        let Some(r) = &step.step_ref else { continue };
        let fail = |m: String| {
            Failure::new(
                RESOLUTION_FAILED,
                format!(
                    "failed to resolve step ref for step {:?} (index {i}): {m}",
                    step.name
                ),
            )
        };
        let action = find(r, actions, &task_vars).map_err(fail)?;
        out.steps[i] = resolve_step(step, i, action, &task_vars).map_err(fail)?;
    }
    Ok(out)
}

/// The StepAction a ref names, or that its resolver found (kept under the
/// key of its params with the Task's params substituted, [`remote_key`]).
fn find<'a>(
    r: &StepRef,
    actions: &'a StepActions,
    task_vars: &Vars,
) -> Result<&'a StepActionSpec, String> {
    if let Some(resolver) = &r.resolver {
        let k = remote_key(r, task_vars)?;
        return actions.get(&k).ok_or_else(|| {
            format!(
                "the StepAction from resolver {resolver} was not resolved ({})",
                crate::remote::describe(&k)
            )
        });
    }
    let name = r.name.as_deref().unwrap_or_default();
    actions
        .get(name)
        .ok_or_else(|| format!("stepactions.tekton.dev {name:?} not found"))
}

/// Where the StepAction a resolver ref finds is kept: the key of its
/// params with the Task's params (the run's values over the defaults)
/// substituted.
///
/// # Errors
/// A param that cannot be substituted.
pub fn remote_key(r: &StepRef, task_vars: &Vars) -> Result<String, String> {
    let params = ref_params_with(r, task_vars)?;
    Ok(crate::remote::key(
        r.resolver.as_deref().unwrap_or_default(),
        &params,
    ))
}

fn ref_params_with(r: &StepRef, task_vars: &Vars) -> Result<Vec<tektite_api::v1::Param>, String> {
    let mut params = r.params.clone();
    for p in &mut params {
        p.value = task_vars
            .param_value(&p.value, "ref.params")
            .map_err(|e| e.to_string())?;
    }
    Ok(params)
}

/// A step ref's resolver params as the run `tr` of `spec` gives them: what
/// an executor resolves, and keeps under [`crate::remote::key`] of them.
///
/// # Errors
/// A param that cannot be substituted.
pub fn ref_params(
    r: &StepRef,
    spec: &TaskSpec,
    tr: &TaskRun,
) -> Result<Vec<tektite_api::v1::Param>, String> {
    ref_params_with(r, &task_param_vars(spec, tr))
}

/// The Task's params as the steps' params see them: the TaskRun's values
/// over the Task's defaults (an object keeps the default's other keys);
/// anything else is left as written.
fn task_param_vars(spec: &TaskSpec, tr: &TaskRun) -> Vars {
    let mut values: BTreeMap<String, ParamValue> = spec
        .params
        .iter()
        .filter_map(|p| Some((p.name.clone(), p.default.clone()?)))
        .collect();
    for p in &tr.spec.params {
        let merged = match (values.get(&p.name), &p.value) {
            (Some(ParamValue::Object(d)), ParamValue::Object(o)) => {
                let mut m = d.clone();
                m.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
                ParamValue::Object(m)
            }
            (_, v) => v.clone(),
        };
        values.insert(p.name.clone(), merged);
    }
    let mut vars = Vars::new(&[]);
    crate::params::add_to(&mut vars, &values);
    vars
}

/// One step made from its StepAction: params checked and resolved, the
/// StepAction's fields substituted, then merged into the step.
fn resolve_step(
    step: &Step,
    i: usize,
    action: &StepActionSpec,
    task_vars: &Vars,
) -> Result<Step, String> {
    check_param_names(step, action)?;
    // As Tekton's replacements, a reference that does not fit (an index
    // into a string) is left as written.
    let given: BTreeMap<String, ParamValue> = step
        .params
        .iter()
        .map(|p| {
            let v = task_vars
                .param_value(&p.value, "")
                .unwrap_or_else(|_| p.value.clone());
            (p.name.clone(), v)
        })
        .collect();
    let values = action_param_values(&action.params, &given)?;
    let from = substituted(action, &values, i)?;
    Ok(merged(step, from))
}

/// The step gives only params the StepAction declares, and every one it
/// declares without a default.
fn check_param_names(step: &Step, action: &StepActionSpec) -> Result<(), String> {
    let declared = |n: &str| action.params.iter().any(|p| p.name == n);
    let extra: Vec<&str> = step
        .params
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| !declared(n))
        .collect();
    if !extra.is_empty() {
        return Err(format!(
            "the step gives params the StepAction does not declare: {}",
            extra.join(", ")
        ));
    }
    let missing: Vec<&str> = action
        .params
        .iter()
        .filter(|p| p.default.is_none() && !step.params.iter().any(|g| g.name == p.name))
        .map(|p| p.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the step does not give params the StepAction needs: {}",
            missing.join(", ")
        ));
    }
    Ok(())
}

/// What a StepAction's params stand for in its fields.
struct Values {
    vars: Vars,
    /// Array and object params whose value is a whole step-result
    /// reference: param name → the reference (without `$(` `)` or `[*]`).
    step_results: BTreeMap<String, String>,
}

/// The value of each declared param: the step's, else the default (whose
/// references to other params are resolved in turn).
fn action_param_values(
    declared: &[ParamSpec],
    given: &BTreeMap<String, ParamValue>,
) -> Result<Values, String> {
    let mut values: BTreeMap<String, ParamValue> = BTreeMap::new();
    let mut step_results = BTreeMap::new();
    let mut pending: Vec<&ParamSpec> = Vec::new();
    for p in declared {
        let kind = declared_kind(p);
        match given.get(&p.name) {
            Some(v) => {
                if let Some(r) = step_result_ref(v).filter(|_| kind != "string") {
                    step_results.insert(p.name.clone(), r);
                } else {
                    values.insert(p.name.clone(), given_value(p, kind, v)?);
                }
            }
            None => match &p.default {
                Some(d) if d.strings().iter().any(|s| s.contains("$(params.")) => {
                    pending.push(p);
                }
                Some(d) => {
                    values.insert(p.name.clone(), d.clone());
                }
                None => {}
            },
        }
    }
    resolve_defaults(declared, pending, &mut values)?;
    let mut vars = Vars::new(&[]);
    for (k, v) in &values {
        vars.set(format!("params.{k}"), v.clone());
    }
    Ok(Values { vars, step_results })
}

/// A value the step gives for `p` (declared `kind`): of that type (an
/// object over the default's keys), or a string left for an object (the
/// default's keys stand, as in Tekton).
fn given_value(p: &ParamSpec, kind: &str, v: &ParamValue) -> Result<ParamValue, String> {
    match (kind, v, &p.default) {
        ("object", ParamValue::Object(o), Some(ParamValue::Object(d))) => {
            let mut m = d.clone();
            m.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok(ParamValue::Object(m))
        }
        ("object", ParamValue::String(_), Some(d)) => Ok(d.clone()),
        (k, v, _) if k == v.kind() => Ok(v.clone()),
        (k, v, _) => Err(format!(
            "param {:?} of the StepAction is declared {k}, but the step gives {} {}",
            p.name,
            if v.kind() == "array" || v.kind() == "object" {
                "an"
            } else {
                "a"
            },
            v.kind()
        )),
    }
}

/// `steps.<s>.results.<r>` when `v` is exactly one step-result reference
/// (`$(steps.s.results.r)` or `…[*]`).
fn step_result_ref(v: &ParamValue) -> Option<String> {
    let ParamValue::String(s) = v else {
        return None;
    };
    let expr = s.strip_prefix("$(")?.strip_suffix(')')?;
    let parts = refs::split(expr).ok()?;
    match parts.as_slice() {
        [
            Part::Name("steps"),
            Part::Name(_),
            Part::Name("results"),
            Part::Name(_),
        ]
        | [
            Part::Name("steps"),
            Part::Name(_),
            Part::Name("results"),
            Part::Name(_),
            Part::Star,
        ] => Some(expr.trim_end_matches("[*]").to_string()),
        _ => None,
    }
}

/// Resolves defaults that use other params, as long as each round
/// resolves one.
fn resolve_defaults(
    declared: &[ParamSpec],
    mut pending: Vec<&ParamSpec>,
    values: &mut BTreeMap<String, ParamValue>,
) -> Result<(), String> {
    while !pending.is_empty() {
        let before = pending.len();
        let mut left = Vec::new();
        for p in pending {
            let used = params_used(p.default.as_ref().map(|d| d.strings()).unwrap_or_default());
            if let Some(unknown) = used
                .iter()
                .find(|u| !declared.iter().any(|d| &d.name == *u))
            {
                return Err(format!(
                    "the default of param {:?} refers to param {unknown:?}, which the StepAction does not declare",
                    p.name
                ));
            }
            if used.iter().all(|u| values.contains_key(u)) {
                let mut vars = Vars::new(&[]);
                for (k, v) in values.iter() {
                    vars.set(format!("params.{k}"), v.clone());
                }
                let d = p
                    .default
                    .clone()
                    .unwrap_or(ParamValue::String(String::new()));
                let v = vars.param_value(&d, "").map_err(|e| e.to_string())?;
                values.insert(p.name.clone(), v);
            } else {
                left.push(p);
            }
        }
        if left.len() == before {
            let names: Vec<&str> = left.iter().map(|p| p.name.as_str()).collect();
            return Err(format!(
                "the defaults of params {} refer to each other in a circle",
                names.join(", ")
            ));
        }
        pending = left;
    }
    Ok(())
}

/// The names of the params `$(params.<name>)` references in `strings` use.
fn params_used(strings: Vec<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for s in strings {
        for expr in refs::scan(s) {
            if let Ok(parts) = refs::split(expr)
                && parts.first() == Some(&Part::Name("params"))
                && let Some(r) = refs::param_ref(&parts, &|_| false)
            {
                out.push(r.name);
            }
        }
    }
    out
}

/// The step the StepAction describes, with its params substituted: first
/// references to params bound to step results become references to those
/// results, then the values replace the rest.
fn substituted(action: &StepActionSpec, values: &Values, i: usize) -> Result<Step, String> {
    let from = Step {
        image: action.image.clone(),
        command: action.command.clone(),
        args: action.args.clone(),
        working_dir: action.working_dir.clone(),
        script: action.script.clone(),
        env: action.env.clone(),
        volume_mounts: action.volume_mounts.clone(),
        security_context: action.security_context.clone(),
        results: action.results.clone(),
        ..Default::default()
    };
    let mut json = serde_json::to_value(&from).map_err(|e| e.to_string())?;
    rewrite_strings(&mut json, &|s| to_step_results(s, &values.step_results));
    values
        .vars
        .json(
            &mut json,
            &format!("spec.steps[{i}]"),
            &["results", "securityContext"],
        )
        .map_err(|e| e.to_string())?;
    serde_json::from_value(json).map_err(|e| format!("after substitution: {e}"))
}

/// Applies `f` to every string of a JSON tree.
fn rewrite_strings(v: &mut serde_json::Value, f: &dyn Fn(&str) -> String) {
    match v {
        serde_json::Value::String(s) => *s = f(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| rewrite_strings(x, f)),
        serde_json::Value::Object(m) => m.values_mut().for_each(|x| rewrite_strings(x, f)),
        _ => {}
    }
}

/// `s` with each `$(params.p…)` of a param bound to a step result made a
/// reference to that result: `[*]`, `[i]` and `.key` carried over.
fn to_step_results(s: &str, bound: &BTreeMap<String, String>) -> String {
    if bound.is_empty() || !s.contains("$(") {
        return s.to_string();
    }
    let mut out = s.to_string();
    for expr in refs::scan(s) {
        let Ok(parts) = refs::split(expr) else {
            continue;
        };
        if parts.first() != Some(&Part::Name("params")) {
            continue;
        }
        let Some(r) = refs::param_ref(&parts, &|n| bound.contains_key(n)) else {
            continue;
        };
        let Some(base) = bound.get(&r.name) else {
            continue;
        };
        let to = match (r.star, r.index, r.key) {
            (true, _, _) => format!("{base}[*]"),
            (_, Some(i), _) => format!("{base}[{i}]"),
            (_, _, Some(k)) => format!("{base}.{k}"),
            _ => base.clone(),
        };
        out = out.replace(&format!("$({expr})"), &format!("$({to})"));
    }
    out
}

/// The step as Tekton merges it: the StepAction's image, security context
/// and working dir replace the step's; its command, args, script, env,
/// volume mounts and results when it has them; `ref` and `params` go.
fn merged(step: &Step, from: Step) -> Step {
    let mut s = step.clone();
    s.image = from.image;
    s.security_context = from.security_context;
    s.working_dir = from.working_dir;
    if !from.command.is_empty() {
        s.command = from.command;
    }
    if !from.args.is_empty() {
        s.args = from.args;
    }
    if from.script.is_some() {
        s.script = from.script;
    }
    if !from.env.is_empty() {
        s.env = from.env;
    }
    if !from.volume_mounts.is_empty() {
        s.volume_mounts = from.volume_mounts;
    }
    if !from.results.is_empty() {
        s.results = from.results;
    }
    s.step_ref = None;
    s.params.clear();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tektite_api::load::Object;

    /// The StepActions and the one TaskRun of a YAML text.
    fn input(yaml: &str) -> (StepActions, TaskRun) {
        let mut actions = StepActions::new();
        let mut run = None;
        for l in tektite_api::load_str("t.yaml", yaml).objects {
            match l.object {
                Object::StepAction(s) => {
                    actions.insert(s.metadata.name.clone().unwrap(), s.spec);
                }
                Object::TaskRun(tr) => run = Some(*tr),
                other => panic!("{other:?}"),
            }
        }
        (actions, run.unwrap())
    }

    fn inlined(yaml: &str) -> Result<Step, Failure> {
        let (actions, tr) = input(yaml);
        let spec = tr.spec.task_spec.clone().unwrap();
        inline(&spec, &tr, &actions).map(|s| s.steps[0].clone())
    }

    const ACTION: &str = "apiVersion: tekton.dev/v1beta1\nkind: StepAction\nmetadata: {name: a}\nspec:\n  image: alpine\n  params:\n    - {name: list, type: array, default: [x]}\n    - {name: first, default: \"$(params.second)-1\"}\n    - {name: second, default: two}\n  command: [echo]\n  args: [\"$(params.list[*])\", \"$(params.list[1])\", \"$(params.first)\"]\n---\n";

    #[test]
    fn a_step_result_given_for_an_array_is_passed_on_as_a_reference() {
        let yaml = format!(
            "{ACTION}apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {{name: r}}\nspec:\n  taskSpec:\n    steps:\n      - {{name: s, ref: {{name: a}}, params: [{{name: list, value: \"$(steps.p.results.names[*])\"}}]}}\n"
        );
        let s = inlined(&yaml).unwrap();
        assert_eq!(
            s.args,
            [
                "$(steps.p.results.names[*])",
                "$(steps.p.results.names[1])",
                "two-1"
            ]
        );
        assert_eq!(s.command, ["echo"]);
        assert!(s.step_ref.is_none() && s.params.is_empty());
    }

    #[test]
    fn the_step_value_wins_over_the_default_and_task_params_reach_it() {
        let yaml = format!(
            "{ACTION}apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {{name: r}}\nspec:\n  params: [{{name: n, value: [a, b]}}]\n  taskSpec:\n    params: [{{name: n, type: array}}]\n    steps:\n      - {{name: s, ref: {{name: a}}, params: [{{name: list, value: \"$(params.n[*])\"}}, {{name: second, value: given}}]}}\n"
        );
        assert_eq!(inlined(&yaml).unwrap().args, ["a", "b", "b", "given-1"]);
    }

    #[test]
    fn params_the_step_action_does_not_declare_or_of_another_type_fail() {
        let run = |params: &str| {
            format!(
                "{ACTION}apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {{name: r}}\nspec:\n  taskSpec:\n    steps:\n      - {{name: s, ref: {{name: a}}, params: {params}}}\n"
            )
        };
        let f = inlined(&run("[{name: nope, value: x}]")).unwrap_err();
        assert_eq!(f.reason, RESOLUTION_FAILED);
        assert!(
            f.message
                .starts_with("failed to resolve step ref for step \"s\" (index 0): ")
                && f.message.ends_with("does not declare: nope"),
            "{}",
            f.message
        );
        let f = inlined(&run("[{name: list, value: plain}]")).unwrap_err();
        assert!(
            f.message
                .contains("declared array, but the step gives a string"),
            "{}",
            f.message
        );
    }

    #[test]
    fn defaults_in_a_circle_fail() {
        let yaml = "apiVersion: tekton.dev/v1beta1\nkind: StepAction\nmetadata: {name: a}\nspec:\n  image: alpine\n  params:\n    - {name: x, default: \"$(params.y)\"}\n    - {name: y, default: \"$(params.x)\"}\n  command: [echo]\n---\napiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {name: r}\nspec:\n  taskSpec:\n    steps: [{name: s, ref: {name: a}}]\n";
        let f = inlined(yaml).unwrap_err();
        assert!(
            f.message.contains("refer to each other in a circle"),
            "{}",
            f.message
        );
    }
}
