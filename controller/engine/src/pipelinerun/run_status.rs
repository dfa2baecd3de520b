//! The parts of a PipelineRun's status that follow from where its tasks
//! stand: the `Succeeded` condition, the results, the child references
//! and the skipped tasks.

use std::time::Duration;

use tektite_api::v1::{
    ChildStatusReference, PipelineRunResult, PipelineRunStatus, PipelineSpec, SkippedTask, TaskRun,
};

use super::resolve::result_vars;
use super::{State, Task, label, on_error_continue, reason};
use crate::pod::go_duration;
use crate::subst::Vars;

/// The `Succeeded` condition from the tasks' states (Tekton's counting):
/// Unknown while tasks remain, then a timeout, a validation failure, a
/// failure, a cancellation, or success.
pub(super) fn overall(
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

/// Sets `status.results` from the pipeline's result declarations; returns
/// the names of results that reference results a succeeded task did not emit.
pub(super) fn pipeline_results(
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
pub(super) fn child_references(
    tasks: &[Task<'_>],
    created: &[TaskRun],
) -> Vec<ChildStatusReference> {
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
pub(super) fn skipped_tasks(tasks: &[Task<'_>]) -> Vec<SkippedTask> {
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
