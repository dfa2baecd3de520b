//! StepActions for `tkt run`: gathered from the given files, the
//! `--task-dir` folders and the catalog (given files first), and the check
//! that every one a run's steps name (`ref: {name}`) is there before
//! anything runs. Inlining them is the engine's (`tektite_engine::stepaction`).

use std::collections::BTreeMap;

use tektite_api::load::{Loaded, Object};
use tektite_api::v1::{PipelineSpec, TaskSpec};
use tektite_engine::stepaction::StepActions;

/// The StepActions among `loaded`, by name; the first of a name wins
/// (`loaded` holds the given files before the library folders).
pub fn gather(loaded: &[Loaded]) -> StepActions {
    let mut out = StepActions::new();
    for l in loaded {
        if let Object::StepAction(s) = &l.object {
            let name = s.metadata.name.clone().unwrap_or_default();
            out.entry(name).or_insert_with(|| s.spec.clone());
        }
    }
    out
}

/// The refs of `spec` (at `at`, e.g. `spec.taskSpec`) to StepActions that
/// are not in `actions`, each as `<at>.steps[i].ref.name "<name>"`.
pub fn missing_in_task(spec: &TaskSpec, at: &str, actions: &StepActions) -> Vec<String> {
    let mut out = Vec::new();
    for (i, s) in spec.steps.iter().enumerate() {
        let Some(r) = &s.step_ref else { continue };
        if r.resolver.is_some() {
            // Resolved before the run, or refused then (crate::remote).
            continue;
        }
        let name = r.name.as_deref().unwrap_or_default();
        if !actions.contains_key(name) {
            out.push(format!("{at}.steps[{i}].ref.name {name:?}"));
        }
    }
    out
}

/// As [`missing_in_task`], for every Task a Pipeline runs: embedded ones
/// (at `<at>.tasks[i].taskSpec`) and those it names in `tasks` (at
/// `task "<name>"`, each once).
pub fn missing_in_pipeline(
    spec: &PipelineSpec,
    at: &str,
    tasks: &BTreeMap<String, TaskSpec>,
    actions: &StepActions,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut named_seen: Vec<String> = Vec::new();
    let all = [("tasks", &spec.tasks), ("finally", &spec.finally)];
    for (list, pts) in all {
        for (i, pt) in pts.iter().enumerate() {
            if let Some(ts) = &pt.task_spec {
                let here = format!("{at}.{list}[{i}].taskSpec");
                out.extend(missing_in_task(&ts.task, &here, actions));
            } else if let Some(k) = pt
                .task_ref
                .as_ref()
                .and_then(tektite_engine::remote::task_ref_key)
                && !named_seen.contains(&k)
                && let Some(ts) = tasks.get(&k)
            {
                let n = tektite_engine::remote::describe(&k);
                out.extend(missing_in_task(ts, &format!("Task {n:?}: spec"), actions));
                named_seen.push(k);
            }
        }
    }
    out
}

/// How a run is told which StepActions it lacks.
pub fn refusal(who: &str, missing: &[String]) -> String {
    format!(
        "{who}: no such StepAction in the given files, --task-dir folders or the catalog: {}",
        missing.join(", ")
    )
}
