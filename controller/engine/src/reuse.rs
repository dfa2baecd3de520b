//! Rerunning a PipelineRun from its failed tasks (`tkt pr rerun
//! --from-failed`): the new run carries, in the annotation
//! `tektite.dev/reuse`, the TaskRuns of the old run's DAG tasks that
//! succeeded (trimmed to name, pipeline task and status). Their tasks are
//! not run again: the engine takes them as the tasks' children, so their
//! results feed the tasks after them, and `childReferences` names them.
//! Finally tasks always run again. An annotation is the run's own (whoever
//! may create the run may write it); one that cannot be read fails the run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tektite_api::v1::{Condition, PipelineRun, PipelineSpec, TaskRun, TaskRunStatus};

/// The annotation a rerun carries.
pub const ANNOTATION: &str = "tektite.dev/reuse";

/// The annotation keeping a rerun's workspaces as first given, once a
/// `--from-failed` bound them to an earlier run's claims (`tkt` reads it).
pub const WORKSPACES_ANNOTATION: &str = "tektite.dev/rerun-workspaces";

/// Whether an annotation is a rerun's record: the run's own, not copied
/// onto its TaskRuns and pods.
pub fn is_record(key: &str) -> bool {
    key == ANNOTATION || key == WORKSPACES_ANNOTATION
}

/// The reason of the failure an unreadable annotation gives.
pub const INVALID: &str = "InvalidReuse";

/// What the annotation holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reuse {
    /// The run whose tasks are reused.
    pub from: String,
    pub task_runs: Vec<TaskRun>,
}

/// A TaskRun as a rerun keeps it: its name, namespace, pipeline task label
/// and status (conditions, times, results; no steps, spec or pod).
pub fn trimmed(tr: &TaskRun) -> TaskRun {
    let mut labels = BTreeMap::new();
    if let Some(t) = tr
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("tekton.dev/pipelineTask"))
    {
        labels.insert("tekton.dev/pipelineTask".to_string(), t.clone());
    }
    let mut out = TaskRun::new(
        tr.metadata.name.as_deref().unwrap_or_default(),
        Default::default(),
    );
    out.metadata.namespace = tr.metadata.namespace.clone();
    out.metadata.labels = Some(labels);
    out.status = tr.status.as_ref().map(|s| TaskRunStatus {
        conditions: s.conditions.clone(),
        start_time: s.start_time.clone(),
        completion_time: s.completion_time.clone(),
        results: s.results.clone(),
        ..Default::default()
    });
    out
}

fn succeeded(tr: &TaskRun) -> bool {
    tr.status
        .as_ref()
        .and_then(|s| Condition::succeeded(&s.conditions))
        .is_some_and(|c| c.status == "True")
}

/// The annotation for a rerun of `from` reusing the TaskRuns of the DAG
/// tasks of `spec` whose TaskRuns all succeeded (every matrix combination,
/// the last attempt).
pub fn annotation(from: &str, spec: &PipelineSpec, children: &[TaskRun]) -> Option<String> {
    let mut kept = Vec::new();
    for t in &spec.tasks {
        let mine: Vec<&TaskRun> = children
            .iter()
            .filter(|tr| {
                tr.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("tekton.dev/pipelineTask"))
                    == Some(&t.name)
            })
            .collect();
        if !mine.is_empty() && mine.iter().all(|tr| succeeded(tr)) {
            kept.extend(mine.into_iter().map(trimmed));
        }
    }
    let r = Reuse {
        from: from.to_string(),
        task_runs: kept,
    };
    serde_json::to_string(&r).ok()
}

/// The reuse a run asks for, if any.
///
/// # Errors
/// The annotation is not a reuse record (the message says why).
pub fn of(pr: &PipelineRun) -> Result<Option<Reuse>, String> {
    let Some(text) = pr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
    else {
        return Ok(None);
    };
    serde_json::from_str::<Reuse>(text)
        .map(Some)
        .map_err(|e| format!("annotation {ANNOTATION}: {e}"))
}

/// The reused TaskRuns that stand for the succeeded tasks of `spec`'s DAG
/// (those of finally tasks, unknown tasks or not succeeded are left out).
pub fn children(reuse: &Reuse, spec: &PipelineSpec) -> Vec<TaskRun> {
    reuse
        .task_runs
        .iter()
        .filter(|tr| {
            let task = tr
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("tekton.dev/pipelineTask"));
            task.is_some_and(|t| spec.tasks.iter().any(|pt| pt.name == *t)) && succeeded(tr)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(name: &str, task: &str, status: &str) -> TaskRun {
        let mut t = TaskRun::new(name, Default::default());
        t.metadata.labels = Some(
            [
                ("tekton.dev/pipelineTask".to_string(), task.to_string()),
                ("other".to_string(), "x".to_string()),
            ]
            .into(),
        );
        t.status = Some(TaskRunStatus {
            conditions: vec![Condition {
                type_: "Succeeded".into(),
                status: status.into(),
                ..Default::default()
            }],
            pod_name: Some("pod".into()),
            ..Default::default()
        });
        t
    }

    fn spec(tasks: &[&str]) -> PipelineSpec {
        let v = serde_json::json!({"tasks": tasks.iter().map(|t| serde_json::json!(
            {"name": t, "taskSpec": {"steps": [{"name": "s", "image": "i", "script": "true"}]}}
        )).collect::<Vec<_>>()});
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn only_tasks_whose_taskruns_all_succeeded_are_reused() {
        let s = spec(&["a", "b", "c"]);
        let kids = [
            tr("r-a", "a", "True"),
            tr("r-b-0", "b", "True"),
            tr("r-b-1", "b", "False"),
            tr("r-c", "c", "False"),
        ];
        let text = annotation("r", &s, &kids).expect("annotation");
        let mut pr = PipelineRun::new("r2", Default::default());
        pr.metadata.annotations = Some([(ANNOTATION.to_string(), text)].into());
        let reuse = of(&pr).expect("readable").expect("present");
        assert_eq!(reuse.from, "r");
        let names: Vec<_> = children(&reuse, &s)
            .iter()
            .map(|t| t.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["r-a"]);
        let kept = &reuse.task_runs[0];
        assert_eq!(kept.metadata.labels.as_ref().map(BTreeMap::len), Some(1));
        assert!(kept.status.as_ref().is_some_and(|s| s.pod_name.is_none()));
    }

    #[test]
    fn an_unreadable_annotation_is_an_error_naming_it() {
        let mut pr = PipelineRun::new("r2", Default::default());
        pr.metadata.annotations = Some([(ANNOTATION.to_string(), "{".to_string())].into());
        let e = of(&pr).expect_err("unreadable");
        assert!(e.contains("annotation tektite.dev/reuse"), "{e}");
    }
}
