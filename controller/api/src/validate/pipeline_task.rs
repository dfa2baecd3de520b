//! One entry of a Pipeline's `tasks` or `finally`, phase by phase: what
//! it runs, retries and timeout, `runAfter`, workspaces, matrix, what it
//! gives the Task it runs, and the references in its own fields.

use super::{
    Checker, MAX_MATRIX_COMBINATIONS, Outer, PipelineCtx, Scope, Site, article, is_whole_reference,
    propagated_specs, sub_path_problem,
};
use crate::diag::suggest;
use crate::path::Path;
use crate::refs;
use crate::v1::*;

impl<'a> Checker<'_, 'a> {
    /// One entry of a Pipeline's `tasks` or `finally`: what it runs, how it
    /// is retried and ordered, what it is given, then the references in its
    /// own fields (problems are reported in that order).
    pub(super) fn pipeline_task(
        &mut self,
        t: &'a PipelineTask,
        tp: &Path,
        in_finally: bool,
        ctx: &PipelineCtx<'_>,
    ) {
        self.what_task_runs(t, tp);
        self.retries_and_timeout(t, tp);
        self.run_after(t, tp, in_finally, ctx);
        self.unique(
            t.params
                .iter()
                .enumerate()
                .map(|(i, p)| (i, p.name.as_str())),
            &tp.key("params"),
            "name",
            "param",
        );
        for (j, w) in t.when.iter().enumerate() {
            self.when(w, &tp.key("when").idx(j));
        }
        self.pipeline_task_workspaces(t, tp, ctx);
        if let Some(m) = &t.matrix {
            self.matrix(m, &t.params, &tp.key("matrix"), ctx);
        }
        self.embedded_task_spec(t, tp, ctx);
        if let Some(spec) = self.task_of(t) {
            self.params_for_task(t, spec, tp, ctx);
            self.workspaces_for_task(t, spec, tp);
        }
        self.pipeline_task_references(t, tp, in_finally, ctx);
    }

    /// What a PipelineTask runs: exactly one of taskRef, taskSpec,
    /// pipelineRef and pipelineSpec, and the reference's own fields (an
    /// embedded taskSpec is checked with [`Self::embedded_task_spec`]).
    fn what_task_runs(&mut self, t: &'a PipelineTask, tp: &Path) {
        let set: Vec<&str> = [
            ("taskRef", t.task_ref.is_some()),
            ("taskSpec", t.task_spec.is_some()),
            ("pipelineRef", t.pipeline_ref.is_some()),
            ("pipelineSpec", t.pipeline_spec.is_some()),
        ]
        .into_iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| n)
        .collect();
        match set.len() {
            0 => self.err(
                tp,
                format!(
                    "task {:?} needs one of taskRef, taskSpec, pipelineRef, pipelineSpec",
                    t.name
                ),
            ),
            1 => {}
            _ => self.err(
                &tp.key(set[1]),
                format!(
                    "{} cannot be used together: expected exactly one",
                    set.join(" and ")
                ),
            ),
        }
        if let Some(r) = &t.task_ref {
            self.pipeline_task_ref(r, &tp.key("taskRef"));
        }
        if let Some(p) = &t.pipeline_spec {
            self.pipeline_spec(p, &tp.key("pipelineSpec"), None);
        }
        if let Some(r) = &t.pipeline_ref {
            self.resolver_ref(
                r.name.as_deref(),
                r.resolver.as_deref(),
                &r.params,
                &tp.key("pipelineRef"),
            );
        }
    }

    /// A PipelineTask's taskRef: a name or a resolver (a custom task may
    /// give neither), no ClusterTask, and an apiVersion `group/version` for
    /// a custom task kind.
    fn pipeline_task_ref(&mut self, r: &TaskRef, rp: &Path) {
        let custom = r.api_version.is_some() || r.kind.as_deref().is_some_and(|k| k != "Task");
        if !custom || r.name.is_some() || r.resolver.is_some() {
            self.resolver_ref(r.name.as_deref(), r.resolver.as_deref(), &r.params, rp);
        }
        if let Some(k) = &r.kind {
            if k == "ClusterTask" {
                self.err(
                    &rp.key("kind"),
                    "ClusterTask was removed from Tekton: use a Task, or resolver: cluster",
                );
            } else if k != "Task" && r.api_version.is_none() {
                self.err(
                    &rp.key("apiVersion"),
                    format!("custom task kind {k:?} needs an apiVersion (group/version)"),
                );
            }
        }
        if let Some(av) = &r.api_version
            && !av.contains('/')
        {
            self.err(
                &rp.key("apiVersion"),
                format!("{av:?} is not group/version"),
            );
        }
    }

    /// `retries` (at least zero, and not with `onError: continue`),
    /// `timeout` and `onError`.
    fn retries_and_timeout(&mut self, t: &PipelineTask, tp: &Path) {
        if let Some(retries) = t.retries {
            if retries < 0 {
                self.err(
                    &tp.key("retries"),
                    format!("{retries} is negative: expected >= 0"),
                );
            }
            if retries > 0 && t.on_error.as_deref() == Some("continue") {
                self.err(
                    &tp.key("onError"),
                    "onError: continue cannot be combined with retries",
                );
            }
        }
        self.duration(t.timeout.as_ref(), &tp.key("timeout"));
        self.on_error(t.on_error.as_deref(), &tp.key("onError"));
    }

    /// `runAfter`: only in `tasks` (finally tasks run after all of them),
    /// naming other tasks of `tasks`.
    fn run_after(&mut self, t: &PipelineTask, tp: &Path, in_finally: bool, ctx: &PipelineCtx<'_>) {
        if in_finally {
            if !t.run_after.is_empty() {
                self.err(
                    &tp.key("runAfter"),
                    "finally tasks cannot use runAfter: they run after all tasks",
                );
            }
            return;
        }
        for (j, r) in t.run_after.iter().enumerate() {
            let rp = tp.key("runAfter").idx(j);
            if *r == t.name {
                self.err(&rp, format!("task {r:?} cannot run after itself"));
            } else if ctx.finally.contains(r.as_str()) {
                self.err(
                    &rp,
                    format!("{r:?} is a finally task: tasks cannot run after finally tasks"),
                );
            } else if !ctx.tasks.contains(r.as_str()) {
                self.err(
                    &rp,
                    format!("unknown task {r:?}{}", suggest(r, ctx.task_names())),
                );
            }
        }
    }

    /// The workspaces bound to a PipelineTask: each named once, and each
    /// taken from a workspace the Pipeline declares.
    fn pipeline_task_workspaces(&mut self, t: &PipelineTask, tp: &Path, ctx: &PipelineCtx<'_>) {
        self.unique(
            t.workspaces
                .iter()
                .enumerate()
                .map(|(i, w)| (i, w.name.as_str())),
            &tp.key("workspaces"),
            "name",
            "workspace",
        );
        let pipeline_ws: Vec<&str> = ctx.workspaces().collect();
        for (j, w) in t.workspaces.iter().enumerate() {
            let source = w.workspace.as_deref().unwrap_or(&w.name);
            if !pipeline_ws.contains(&source) {
                let field = if w.workspace.is_some() {
                    "workspace"
                } else {
                    "name"
                };
                self.err(
                    &tp.key("workspaces").idx(j).key(field),
                    format!(
                        "pipeline workspace {source:?} is not declared in spec.workspaces{}",
                        suggest(source, pipeline_ws.iter().copied())
                    ),
                );
            }
        }
    }

    /// A PipelineTask's matrix (at `mp`): params named once, not also in
    /// the task's `params`, arrays; string `include` params; at most
    /// [`MAX_MATRIX_COMBINATIONS`] combinations.
    fn matrix(&mut self, m: &Matrix, params: &[Param], mp: &Path, ctx: &PipelineCtx<'_>) {
        self.unique(
            m.params
                .iter()
                .enumerate()
                .map(|(i, p)| (i, p.name.as_str())),
            &mp.key("params"),
            "name",
            "matrix param",
        );
        let combos = self.matrix_params(m, params, mp, ctx);
        let combos = combos.saturating_add(self.matrix_include(m, mp));
        if combos > MAX_MATRIX_COMBINATIONS {
            self.err(
                mp,
                format!(
                    "matrix makes {combos} combinations: the limit is {MAX_MATRIX_COMBINATIONS}"
                ),
            );
        }
        if m.params.is_empty() && m.include.is_empty() {
            self.err(mp, "matrix needs params or include");
        }
    }

    /// Checks the matrix params; returns how many combinations they make
    /// (an array behind a whole reference counts its known length, or 1).
    fn matrix_params(
        &mut self,
        m: &Matrix,
        params: &[Param],
        mp: &Path,
        ctx: &PipelineCtx<'_>,
    ) -> usize {
        let mut combos: usize = if m.params.is_empty() { 0 } else { 1 };
        for (j, p) in m.params.iter().enumerate() {
            let pp = mp.key("params").idx(j);
            if params.iter().any(|x| x.name == p.name) {
                self.err(
                    &pp.key("name"),
                    format!("param {:?} is set both in params and in matrix", p.name),
                );
            }
            match &p.value {
                ParamValue::Array(a) => combos = combos.saturating_mul(a.len()),
                ParamValue::String(s) if is_whole_reference(s) => {
                    combos = combos.saturating_mul(self.array_len(s, ctx).unwrap_or(1));
                }
                other => self.err(
                    &pp.key("value"),
                    format!(
                        "matrix params must be arrays, found {} {}",
                        article(other.kind()),
                        other.kind()
                    ),
                ),
            }
        }
        combos
    }

    /// Checks the matrix `include` entries; returns how many combinations
    /// they add (an entry adds one unless it only picks existing ones).
    fn matrix_include(&mut self, m: &Matrix, mp: &Path) -> usize {
        let mut added = 0;
        for (j, inc) in m.include.iter().enumerate() {
            let ip = mp.key("include").idx(j);
            self.unique(
                inc.params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (i, p.name.as_str())),
                &ip.key("params"),
                "name",
                "include param",
            );
            for (k, p) in inc.params.iter().enumerate() {
                if !matches!(p.value, ParamValue::String(_)) {
                    self.err(
                        &ip.key("params").idx(k).key("value"),
                        "include params must be strings",
                    );
                }
            }
            let adds_new = m.params.is_empty()
                || inc.params.iter().any(|p| {
                    m.params.iter().any(|mp| {
                        mp.name == p.name
                            && matches!((&mp.value, &p.value), (ParamValue::Array(a), ParamValue::String(s)) if !a.contains(s))
                    })
                });
            if adds_new {
                added += 1;
            }
        }
        added
    }

    /// An embedded `taskSpec`: a Task spec in the Pipeline's scope, or the
    /// spec of a custom task, which needs both apiVersion and kind.
    fn embedded_task_spec(&mut self, t: &PipelineTask, tp: &Path, ctx: &PipelineCtx<'_>) {
        let Some(ts) = &t.task_spec else { return };
        if ts.api_version.is_none() && ts.kind.is_none() {
            // In a PipelineRun's embedded spec, the params the task passes
            // reach its spec even undeclared (Tekton's scope precedence).
            let given = if ctx.run.is_some() {
                propagated_specs(&t.params, &ts.task.params)
            } else {
                Vec::new()
            };
            self.task_spec(&ts.task, &tp.key("taskSpec"), &Outer::Pipeline(ctx, &given));
        } else if ts.api_version.is_none() || ts.kind.is_none() {
            self.err(
                &tp.key("taskSpec"),
                "a custom task spec needs both apiVersion and kind",
            );
        }
    }

    /// The params a PipelineTask gives the Task it runs (`spec`, when
    /// known): required ones given (here, in the matrix, or for an
    /// embedded spec by the Pipeline), types and enums hold; a param the
    /// Task does not declare is a warning.
    fn params_for_task(
        &mut self,
        t: &PipelineTask,
        spec: &TaskSpec,
        tp: &Path,
        ctx: &PipelineCtx<'_>,
    ) {
        let matrix_names: Vec<&str> = t
            .matrix
            .iter()
            .flat_map(|m| m.params.iter().map(|p| p.name.as_str()))
            .collect();
        let include_names: Vec<&str> = t
            .matrix
            .iter()
            .flat_map(|m| {
                m.include
                    .iter()
                    .flat_map(|i| i.params.iter().map(|p| p.name.as_str()))
            })
            .collect();
        let embedded = t.task_spec.is_some();
        let pipeline_params: Vec<&str> = ctx.spec.params.iter().map(|p| p.name.as_str()).collect();
        let given_elsewhere = |n: &str| {
            matrix_names.contains(&n)
                || include_names.contains(&n)
                || (embedded && pipeline_params.contains(&n))
        };
        let who = format!("task {:?}", t.name);
        self.param_values(
            &t.params,
            &spec.params,
            &tp.key("params"),
            tp,
            &given_elsewhere,
            &who,
        );
        // An embedded spec takes params it does not declare (propagation).
        for (j, p) in t.params.iter().enumerate() {
            if t.task_spec.is_none() && !spec.params.iter().any(|s| s.name == p.name) {
                self.warn(
                    &tp.key("params").idx(j).key("name"),
                    format!(
                        "task {:?} declares no param {:?}{}",
                        t.name,
                        p.name,
                        suggest(&p.name, spec.params.iter().map(|s| s.name.as_str()))
                    ),
                );
            }
        }
    }

    /// The workspaces a PipelineTask binds for the Task it runs (`spec`,
    /// when known): every required one bound, none a referenced Task does
    /// not declare.
    fn workspaces_for_task(&mut self, t: &PipelineTask, spec: &'a TaskSpec, tp: &Path) {
        let who = format!("task {:?}", t.name);
        let bound: Vec<&str> = t.workspaces.iter().map(|w| w.name.as_str()).collect();
        self.required_workspaces(
            &bound,
            spec.workspaces
                .iter()
                .map(|w| (w.name.as_str(), w.optional)),
            tp,
            &who,
        );
        // An embedded spec takes bindings it does not declare (propagation).
        for (j, w) in t.workspaces.iter().enumerate() {
            if t.task_spec.is_none() && !spec.workspaces.iter().any(|d| d.name == w.name) {
                self.err(
                    &tp.key("workspaces").idx(j).key("name"),
                    format!(
                        "task {:?} declares no workspace {:?}{}",
                        t.name,
                        w.name,
                        suggest(&w.name, spec.workspaces.iter().map(|d| d.name.as_str()))
                    ),
                );
            }
        }
    }

    /// Variable references in a PipelineTask's own fields (param and
    /// matrix values, when expressions, workspace subPaths, taskRef
    /// params), which the Pipeline substitutes.
    fn pipeline_task_references(
        &mut self,
        t: &PipelineTask,
        tp: &Path,
        in_finally: bool,
        ctx: &PipelineCtx<'_>,
    ) {
        let scope = Scope::pipeline(
            ctx,
            Site::PipelineTask {
                in_finally,
                self_task: &t.name,
            },
        );
        for (j, p) in t.params.iter().enumerate() {
            self.param_value(&p.value, &tp.key("params").idx(j).key("value"), &scope);
        }
        if let Some(m) = &t.matrix {
            for (j, p) in m.params.iter().enumerate() {
                self.param_value(
                    &p.value,
                    &tp.key("matrix").key("params").idx(j).key("value"),
                    &scope,
                );
            }
            for (j, inc) in m.include.iter().enumerate() {
                for (k, p) in inc.params.iter().enumerate() {
                    self.param_value(
                        &p.value,
                        &tp.key("matrix")
                            .key("include")
                            .idx(j)
                            .key("params")
                            .idx(k)
                            .key("value"),
                        &scope,
                    );
                }
            }
        }
        for (j, w) in t.when.iter().enumerate() {
            let wp = tp.key("when").idx(j);
            if let Some(i) = &w.input {
                self.check_string(i, &wp.key("input"), &scope, false);
            }
            for (k, v) in w.values.iter().enumerate() {
                self.check_string(v, &wp.key("values").idx(k), &scope, true);
            }
            if let Some(c) = &w.cel {
                self.check_string(c, &wp.key("cel"), &scope, false);
            }
        }
        for (j, w) in t.workspaces.iter().enumerate() {
            if let Some(sp) = &w.sub_path {
                let at = tp.key("workspaces").idx(j).key("subPath");
                self.check_string(sp, &at, &scope, false);
                if let Some(problem) = sub_path_problem(sp) {
                    self.err(&at, problem);
                }
            }
        }
        if let Some(r) = &t.task_ref {
            for (j, p) in r.params.iter().enumerate() {
                self.param_value(
                    &p.value,
                    &tp.key("taskRef").key("params").idx(j).key("value"),
                    &scope,
                );
            }
        }
    }

    /// Length of an array a whole reference points to, when it is known.
    fn array_len(&self, s: &str, ctx: &PipelineCtx<'_>) -> Option<usize> {
        let expr = s.strip_prefix("$(")?.strip_suffix(')')?;
        let parts = refs::split(expr).ok()?;
        let r = refs::param_ref(&parts, &|n| ctx.spec.params.iter().any(|p| p.name == n))?;
        match &ctx.spec.params.iter().find(|p| p.name == r.name)?.default {
            Some(ParamValue::Array(a)) => Some(a.len()),
            _ => None,
        }
    }
}
