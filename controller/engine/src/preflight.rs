//! What the engine would refuse at once: a run's first plan, made on
//! nothing observed, and the first plan of each TaskRun it would start.
//! A front end that runs it before recording anything (`tkt run`) turns
//! what would be a failed run (a value outside a param's enum, given
//! directly or through a pipeline param; an object param without a key; a
//! CEL `when`; a workspace a referenced Task does not declare) into an
//! error about the input.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::jiff::Timestamp;
use tektite_api::v1::{Condition, PipelineRun, PipelineSpec, TaskRun, TaskSpec};

use crate::params::Failure;
use crate::pod::Config;
use crate::stepaction::{self, StepActions};
use crate::{pipelinerun, taskrun};

/// Why the engine would fail a run at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The pipeline task whose TaskRun would fail, when it is one of them.
    pub task: Option<String>,
    pub reason: String,
    pub message: String,
}

impl fmt::Display for Refusal {
    /// `[task "t": ]Reason: message`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = &self.task {
            write!(f, "task {t:?}: ")?;
        }
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// The refusal a plan's status says, if it ends the run as failed.
fn refusal(conditions: &[Condition], task: Option<String>) -> Option<Refusal> {
    let c = Condition::succeeded(conditions).filter(|c| c.status == "False")?;
    Some(Refusal {
        task,
        reason: c.reason.clone().unwrap_or_default(),
        message: c.message.clone().unwrap_or_default(),
    })
}

/// What the first plan of a TaskRun refuses (before any image is looked up
/// or pod made).
pub fn task_run(
    tr: &TaskRun,
    resolved: taskrun::Resolved<'_>,
    config: &Config,
    now: Timestamp,
) -> Option<Refusal> {
    let plan = taskrun::reconcile(
        taskrun::Observed {
            task_run: tr,
            resolved,
            pod: None,
            images: &BTreeMap::new(),
            now,
        },
        config,
    );
    refusal(&plan.status?.conditions, None)
}

/// What the first plan of a PipelineRun refuses, or else that of a TaskRun
/// it would start, with the StepActions its steps name inlined (the Task
/// of one it cannot find is left to the run).
pub fn pipeline_run(
    pr: &PipelineRun,
    pipeline: Result<(&PipelineSpec, Option<&str>), &Failure>,
    tasks: &BTreeMap<String, TaskSpec>,
    actions: &StepActions,
    config: &Config,
    now: Timestamp,
) -> Option<Refusal> {
    let plan = pipelinerun::reconcile(
        pipelinerun::Observed {
            run: pr,
            pipeline,
            tasks,
            children: &[],
            now,
        },
        config,
    );
    if let Some(r) = plan.status.and_then(|s| refusal(&s.conditions, None)) {
        return Some(r);
    }
    plan.create.iter().find_map(|tr| {
        let spec = match (&tr.spec.task_spec, &tr.spec.task_ref) {
            (Some(s), _) => s.as_ref(),
            (None, Some(r)) => tasks.get(r.name.as_deref()?)?,
            (None, None) => return None,
        };
        let task = tr
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("tekton.dev/pipelineTask"))
            .cloned();
        let r = match stepaction::inline(spec, tr, actions) {
            Ok(inlined) => task_run(tr, taskrun::Resolved::Spec(&inlined, None), config, now)?,
            Err(f) => Refusal {
                task: None,
                reason: f.reason.to_string(),
                message: f.message,
            },
        };
        Some(Refusal { task, ..r })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tektite_api::load::Object;

    fn objects(yaml: &str) -> Vec<Object> {
        tektite_api::load_str("t.yaml", yaml)
            .objects
            .into_iter()
            .map(|l| l.object)
            .collect()
    }

    #[test]
    fn an_enum_broken_through_a_pipeline_param_is_refused_at_once() {
        let o = objects(
            "apiVersion: tekton.dev/v1\nkind: Task\nmetadata: {name: levels}\nspec:\n  params: [{name: level, enum: [low, high]}]\n  steps: [{name: s, image: alpine, script: echo}]\n---\napiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata: {name: p, namespace: ci, uid: u}\nspec:\n  params: [{name: lvl, value: bogus}]\n  pipelineSpec:\n    params: [{name: lvl}]\n    tasks:\n      - {name: t, taskRef: {name: levels}, params: [{name: level, value: $(params.lvl)}]}\n",
        );
        let (Object::Task(t), Object::PipelineRun(pr)) = (&o[0], &o[1]) else {
            panic!("{o:?}")
        };
        let tasks = BTreeMap::from([("levels".to_string(), t.spec.clone())]);
        let spec = pr.spec.pipeline_spec.as_deref().unwrap();
        let r = pipeline_run(
            pr,
            Ok((spec, None)),
            &tasks,
            &StepActions::new(),
            &Config::default(),
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(r.task.as_deref(), Some("t"));
        assert_eq!(r.reason, "InvalidParamValue");
        assert!(
            r.to_string().starts_with("task \"t\": InvalidParamValue: "),
            "{r}"
        );
        // With a value in the enum, nothing is refused.
        let mut good = (**pr).clone();
        good.spec.params[0].value = tektite_api::param::ParamValue::String("low".into());
        assert_eq!(
            pipeline_run(
                &good,
                Ok((spec, None)),
                &tasks,
                &StepActions::new(),
                &Config::default(),
                Timestamp::UNIX_EPOCH
            ),
            None
        );
    }

    /// Regression: the Task of a PipelineRun's TaskRun was planned with its
    /// StepAction steps not inlined, so an array param passed on in a
    /// step's params was refused as an array inside a string.
    #[test]
    fn regression_step_action_params_of_a_child_task_are_not_refused() {
        let o = objects(
            "apiVersion: tekton.dev/v1beta1\nkind: StepAction\nmetadata: {name: list}\nspec:\n  image: alpine\n  params: [{name: items, type: array}]\n  command: [echo]\n  args: [\"$(params.items[*])\"]\n---\napiVersion: tekton.dev/v1\nkind: Task\nmetadata: {name: lister}\nspec:\n  params: [{name: arr, type: array}]\n  steps: [{name: s, ref: {name: list}, params: [{name: items, value: \"$(params.arr[*])\"}]}]\n---\napiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata: {name: p, namespace: ci, uid: u}\nspec:\n  pipelineSpec:\n    tasks: [{name: l, taskRef: {name: lister}, params: [{name: arr, value: [a, b]}]}]\n",
        );
        let (Object::StepAction(sa), Object::Task(t), Object::PipelineRun(pr)) =
            (&o[0], &o[1], &o[2])
        else {
            panic!("{o:?}")
        };
        let tasks = BTreeMap::from([("lister".to_string(), t.spec.clone())]);
        let spec = pr.spec.pipeline_spec.as_deref().unwrap();
        let plan = |actions: &StepActions| {
            pipeline_run(
                pr,
                Ok((spec, None)),
                &tasks,
                actions,
                &Config::default(),
                Timestamp::UNIX_EPOCH,
            )
        };
        let actions = StepActions::from([("list".to_string(), sa.spec.clone())]);
        assert_eq!(plan(&actions), None);
        // Without the StepAction: the run's own failure, for its task.
        let r = plan(&StepActions::new()).unwrap();
        assert_eq!(
            (r.task.as_deref(), r.reason.as_str()),
            (Some("l"), "TaskRunResolutionFailed")
        );
    }
}
