//! TaskRun and PipelineRun specs: what they run, their params, workspace
//! bindings, timeouts and overrides, and what they give the Task or
//! Pipeline when it is known.

use std::collections::HashSet;

use super::{Checker, Outer, claim_name_problem, fmt_duration, propagated_specs, sub_path_problem};
use crate::diag::suggest;
use crate::path::Path;
use crate::v1::*;

impl<'a> Checker<'_, 'a> {
    /// A run's params, each named once (compared case-insensitively).
    fn run_params(&mut self, values: &[Param], path: &Path) {
        // Tekton compares run param names case-insensitively.
        let lower: Vec<String> = values.iter().map(|p| p.name.to_ascii_lowercase()).collect();
        self.unique(
            lower.iter().enumerate().map(|(i, n)| (i, n.as_str())),
            path,
            "name",
            "param",
        );
    }

    /// A run's workspace bindings: each named once, with exactly one volume
    /// source whose required fields are set, and a `subPath` inside it.
    fn bindings(&mut self, bindings: &[WorkspaceBinding], path: &Path) {
        self.unique(
            bindings
                .iter()
                .enumerate()
                .map(|(i, b)| (i, b.name.as_str())),
            path,
            "name",
            "workspace binding",
        );
        for (i, b) in bindings.iter().enumerate() {
            let bp = path.idx(i);
            let sources = b.sources();
            match sources.len() {
                0 => self.err(
                    &bp,
                    format!("workspace {:?} has no volume: set one of persistentVolumeClaim, volumeClaimTemplate, emptyDir, configMap, secret, projected, csi", b.name),
                ),
                1 => {}
                _ => self.err(&bp, format!("workspace {:?} sets {}: expected exactly one volume source", b.name, sources.join(" and "))),
            }
            if let Some(pvc) = &b.persistent_volume_claim {
                let at = bp.key("persistentVolumeClaim").key("claimName");
                if pvc.claim_name.is_empty() {
                    self.err(&at, "required field is missing");
                } else if !pvc.claim_name.contains("$(")
                    && let Some(problem) = claim_name_problem(&pvc.claim_name)
                {
                    self.err(&at, problem);
                }
            }
            if b.config_map.as_ref().is_some_and(|c| c.name.is_empty()) {
                self.err(
                    &bp.key("configMap").key("name"),
                    "required field is missing",
                );
            }
            if b.secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref().unwrap_or("").is_empty())
            {
                self.err(
                    &bp.key("secret").key("secretName"),
                    "required field is missing",
                );
            }
            if b.csi.as_ref().is_some_and(|c| c.driver.is_empty()) {
                self.err(&bp.key("csi").key("driver"), "required field is missing");
            }
            if let Some(problem) = b.sub_path.as_deref().and_then(sub_path_problem) {
                self.err(&bp.key("subPath"), problem);
            }
        }
    }

    /// A TaskRun's spec: the Task it runs, its params, bindings and
    /// settings, the step and sidecar overrides, then, when the Task is
    /// known, what the run gives it.
    pub(super) fn taskrun_spec(&mut self, spec: &'a TaskRunSpec, path: &Path) {
        self.taskrun_task(spec, path);
        self.run_params(&spec.params, &path.key("params"));
        self.bindings(&spec.workspaces, &path.key("workspaces"));
        self.duration(spec.timeout.as_ref(), &path.key("timeout"));
        if let Some(r) = spec.retries
            && r < 0
        {
            self.err(
                &path.key("retries"),
                format!("{r} is negative: expected >= 0"),
            );
        }
        if spec.status_message.is_some() && spec.status.is_none() {
            self.err(&path.key("statusMessage"), "statusMessage needs status");
        }
        self.taskrun_overrides(spec, path);
        let task = spec
            .task_spec
            .as_deref()
            .or_else(|| spec.task_ref.as_ref().and_then(|r| self.catalog.task(r)));
        if let Some(task) = task {
            let who = match &spec.task_ref {
                Some(TaskRef { name: Some(n), .. }) => format!("Task {n:?}"),
                _ => "the Task".to_string(),
            };
            self.taskrun_gives_task(spec, task, path, &who);
            self.overrides_match_task(spec, task, path, &who);
        }
    }

    /// What a TaskRun runs: exactly one of taskRef (complete, and not a
    /// ClusterTask) and taskSpec (a valid Task spec).
    fn taskrun_task(&mut self, spec: &TaskRunSpec, path: &Path) {
        match (&spec.task_ref, &spec.task_spec) {
            (None, None) => self.err(path, "one of taskRef or taskSpec is required"),
            (Some(_), Some(_)) => self.err(
                &path.key("taskSpec"),
                "taskRef and taskSpec cannot be used together: expected exactly one",
            ),
            _ => {}
        }
        if let Some(r) = &spec.task_ref {
            self.resolver_ref(
                r.name.as_deref(),
                r.resolver.as_deref(),
                &r.params,
                &path.key("taskRef"),
            );
            if r.kind.as_deref() == Some("ClusterTask") {
                self.err(
                    &path.key("taskRef").key("kind"),
                    "ClusterTask was removed from Tekton: use a Task, or resolver: cluster",
                );
            }
        }
        if let Some(ts) = &spec.task_spec {
            let given = propagated_specs(&spec.params, &ts.params);
            self.task_spec(ts, &path.key("taskSpec"), &Outer::Run(&given));
        }
    }

    /// A TaskRun's `stepSpecs` and `sidecarSpecs`, each named once, and
    /// `computeResources` not combined with per-step resources.
    fn taskrun_overrides(&mut self, spec: &TaskRunSpec, path: &Path) {
        self.unique(
            spec.step_specs
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.name.as_str())),
            &path.key("stepSpecs"),
            "name",
            "step spec",
        );
        self.unique(
            spec.sidecar_specs
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.name.as_str())),
            &path.key("sidecarSpecs"),
            "name",
            "sidecar spec",
        );
        if spec.compute_resources.is_some()
            && spec
                .step_specs
                .iter()
                .any(|s| s.compute_resources != Default::default())
        {
            self.err(
                &path.key("computeResources"),
                "computeResources cannot be combined with stepSpecs resources",
            );
        }
    }

    /// The params and workspaces a TaskRun gives its Task (`who`): every
    /// required one given, of the declared type; a referenced Task takes
    /// no binding it does not declare.
    fn taskrun_gives_task(
        &mut self,
        spec: &TaskRunSpec,
        task: &'a TaskSpec,
        path: &Path,
        who: &str,
    ) {
        self.param_values(
            &spec.params,
            &task.params,
            &path.key("params"),
            &path.key("params"),
            &|n| self.catalog.given_params.iter().any(|g| g == n),
            who,
        );
        let bound: Vec<&str> = spec.workspaces.iter().map(|w| w.name.as_str()).collect();
        self.required_workspaces(
            &bound,
            task.workspaces
                .iter()
                .map(|w| (w.name.as_str(), w.optional)),
            &path.key("workspaces"),
            who,
        );
        // Only an embedded taskSpec takes bindings it does not declare
        // (Tekton propagates them); a referenced Task refuses them.
        if spec.task_spec.is_none() {
            for (i, w) in spec.workspaces.iter().enumerate() {
                if !task.workspaces.iter().any(|d| d.name == w.name) {
                    self.err(
                        &path.key("workspaces").idx(i).key("name"),
                        format!(
                            "workspace binding {:?} does not match any workspace {who} declares{}",
                            w.name,
                            suggest(&w.name, task.workspaces.iter().map(|d| d.name.as_str()))
                        ),
                    );
                }
            }
        }
    }

    /// Each of a TaskRun's `stepSpecs` and `sidecarSpecs` names a step or
    /// sidecar its Task (`who`) has.
    fn overrides_match_task(
        &mut self,
        spec: &TaskRunSpec,
        task: &TaskSpec,
        path: &Path,
        who: &str,
    ) {
        let steps: Vec<&str> = task.steps.iter().map(|s| s.name.as_str()).collect();
        for (i, s) in spec.step_specs.iter().enumerate() {
            if !steps.contains(&s.name.as_str()) {
                self.err(
                    &path.key("stepSpecs").idx(i).key("name"),
                    format!(
                        "{who} has no step {:?}{}",
                        s.name,
                        suggest(&s.name, steps.iter().copied())
                    ),
                );
            }
        }
        let sidecars: Vec<&str> = task.sidecars.iter().map(|s| s.name.as_str()).collect();
        for (i, s) in spec.sidecar_specs.iter().enumerate() {
            if !sidecars.contains(&s.name.as_str()) {
                self.err(
                    &path.key("sidecarSpecs").idx(i).key("name"),
                    format!(
                        "{who} has no sidecar {:?}{}",
                        s.name,
                        suggest(&s.name, sidecars.iter().copied())
                    ),
                );
            }
        }
    }

    /// A PipelineRun's spec: the Pipeline it runs, its params, bindings and
    /// timeouts, its `taskRunSpecs`, then, when the Pipeline is known, what
    /// the run gives it.
    pub(super) fn pipelinerun_spec(&mut self, spec: &'a PipelineRunSpec, path: &Path) {
        self.pipelinerun_pipeline(spec, path);
        self.run_params(&spec.params, &path.key("params"));
        self.bindings(&spec.workspaces, &path.key("workspaces"));
        self.timeouts(spec, path);
        let pipeline = spec.pipeline_spec.as_deref().or_else(|| {
            spec.pipeline_ref
                .as_ref()
                .and_then(|r| self.catalog.pipeline(r))
        });
        self.task_run_specs(spec, pipeline, path);
        if let Some(p) = pipeline {
            self.pipelinerun_gives_pipeline(spec, p, path);
        }
    }

    /// What a PipelineRun runs: exactly one of pipelineRef (complete) and
    /// pipelineSpec (a valid Pipeline spec).
    fn pipelinerun_pipeline(&mut self, spec: &'a PipelineRunSpec, path: &Path) {
        match (&spec.pipeline_ref, &spec.pipeline_spec) {
            (None, None) => self.err(path, "one of pipelineRef or pipelineSpec is required"),
            (Some(_), Some(_)) => self.err(
                &path.key("pipelineSpec"),
                "pipelineRef and pipelineSpec cannot be used together: expected exactly one",
            ),
            _ => {}
        }
        if let Some(r) = &spec.pipeline_ref {
            self.resolver_ref(
                r.name.as_deref(),
                r.resolver.as_deref(),
                &r.params,
                &path.key("pipelineRef"),
            );
        }
        if let Some(ps) = &spec.pipeline_spec {
            self.pipeline_spec(ps, &path.key("pipelineSpec"), Some(spec));
        }
    }

    /// A PipelineRun's `taskRunSpecs`: one per pipeline task, a valid
    /// timeout, and (when the Pipeline is known) a task it has.
    fn task_run_specs(
        &mut self,
        spec: &PipelineRunSpec,
        pipeline: Option<&PipelineSpec>,
        path: &Path,
    ) {
        let mut seen = HashSet::new();
        for (i, s) in spec.task_run_specs.iter().enumerate() {
            let sp = path.key("taskRunSpecs").idx(i);
            if s.pipeline_task_name.is_empty() {
                self.err(&sp.key("pipelineTaskName"), "required field is missing");
            } else if !seen.insert(s.pipeline_task_name.as_str()) {
                self.err(
                    &sp.key("pipelineTaskName"),
                    format!("duplicate taskRunSpec for {:?}", s.pipeline_task_name),
                );
            }
            self.duration(s.timeout.as_ref(), &sp.key("timeout"));
            if let Some(p) = pipeline {
                let names: Vec<&str> = p
                    .tasks
                    .iter()
                    .chain(p.finally.iter())
                    .map(|t| t.name.as_str())
                    .collect();
                if !s.pipeline_task_name.is_empty()
                    && !names.contains(&s.pipeline_task_name.as_str())
                {
                    self.err(
                        &sp.key("pipelineTaskName"),
                        format!(
                            "the Pipeline has no task {:?}{}",
                            s.pipeline_task_name,
                            suggest(&s.pipeline_task_name, names.iter().copied())
                        ),
                    );
                }
            }
        }
    }

    /// The params and workspaces a PipelineRun gives its Pipeline `p`:
    /// every required one given, of the declared type; a binding the
    /// Pipeline does not declare is a warning.
    fn pipelinerun_gives_pipeline(
        &mut self,
        spec: &PipelineRunSpec,
        p: &'a PipelineSpec,
        path: &Path,
    ) {
        let who = match &spec.pipeline_ref {
            Some(PipelineRef { name: Some(n), .. }) => format!("Pipeline {n:?}"),
            _ => "the Pipeline".to_string(),
        };
        self.param_values(
            &spec.params,
            &p.params,
            &path.key("params"),
            &path.key("params"),
            &|n| self.catalog.given_params.iter().any(|g| g == n),
            &who,
        );
        let bound: Vec<&str> = spec.workspaces.iter().map(|w| w.name.as_str()).collect();
        self.required_workspaces(
            &bound,
            p.workspaces.iter().map(|w| (w.name.as_str(), w.optional)),
            &path.key("workspaces"),
            &who,
        );
        // An embedded spec takes bindings it does not declare (propagation).
        for (i, w) in spec.workspaces.iter().enumerate() {
            if spec.pipeline_spec.is_none() && !p.workspaces.iter().any(|d| d.name == w.name) {
                self.warn(
                    &path.key("workspaces").idx(i).key("name"),
                    format!(
                        "{who} declares no workspace {:?}{}",
                        w.name,
                        suggest(&w.name, p.workspaces.iter().map(|d| d.name.as_str()))
                    ),
                );
            }
        }
    }

    /// A PipelineRun's `timeouts`: durations, with tasks and finally
    /// within the pipeline's (by default one hour) when it has one.
    fn timeouts(&mut self, spec: &PipelineRunSpec, path: &Path) {
        let Some(t) = &spec.timeouts else { return };
        let tp = path.key("timeouts");
        let pipeline = self.duration(t.pipeline.as_ref(), &tp.key("pipeline"));
        let tasks = self.duration(t.tasks.as_ref(), &tp.key("tasks"));
        let finally = self.duration(t.finally.as_ref(), &tp.key("finally"));
        // Tekton's default pipeline timeout is 60 minutes.
        let (limit, limit_name) = match pipeline {
            Some(p) => (p, "timeouts.pipeline"),
            None => (60 * 60 * 1_000_000_000, "the default pipeline timeout (1h)"),
        };
        if limit == 0 {
            return;
        }
        for (name, value) in [("tasks", tasks), ("finally", finally)] {
            match value {
                Some(0) => self.err(
                    &tp.key(name),
                    format!(
                        "0 (no timeout) is not allowed when {limit_name} is set ({})",
                        fmt_duration(limit)
                    ),
                ),
                Some(v) if v > limit => self.err(
                    &tp.key(name),
                    format!(
                        "{} is longer than {limit_name} ({})",
                        fmt_duration(v),
                        fmt_duration(limit)
                    ),
                ),
                _ => {}
            }
        }
        if let (Some(a), Some(b)) = (tasks, finally)
            && a > 0
            && b > 0
            && a + b > limit
            && a <= limit
            && b <= limit
        {
            self.err(
                &tp,
                format!(
                    "tasks ({}) + finally ({}) is longer than {limit_name} ({})",
                    fmt_duration(a),
                    fmt_duration(b),
                    fmt_duration(limit)
                ),
            );
        }
    }
}
