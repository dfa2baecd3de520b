//! Variable references (`$(params.x)`, `$(tasks.t.results.r)`, …) in
//! strings, checked against a [`Scope`]: what each kind of
//! reference may name where it is used.

use serde_json::Value;

use super::{Checker, Scope, Site};
use crate::diag::suggest;
use crate::path::Path;
use crate::refs::{self, Part};
use crate::v1::*;

impl<'a> Checker<'_, 'a> {
    /// References in a param value: a string, each element of an array
    /// (where a whole-array reference may stand alone), each value of an
    /// object.
    pub(super) fn param_value(&mut self, v: &ParamValue, path: &Path, scope: &Scope<'_>) {
        match v {
            ParamValue::String(s) => self.check_string(s, path, scope, true),
            ParamValue::Array(a) => {
                for (i, s) in a.iter().enumerate() {
                    self.check_string(s, &path.idx(i), scope, true);
                }
            }
            ParamValue::Object(o) => {
                for (k, s) in o {
                    self.check_string(s, &path.key_owned(k), scope, false);
                }
            }
        }
    }

    /// Checks every string inside a serializable value; `strict` says, from
    /// the keys below `path` (indexes left out), whether Tekton checks the
    /// references of that field (otherwise problems are warnings).
    pub(super) fn strings_of<T: serde::Serialize>(
        &mut self,
        item: &T,
        path: &Path,
        scope: &Scope<'_>,
        strict: fn(&[&str]) -> bool,
    ) {
        let Ok(value) = serde_json::to_value(item) else {
            return;
        };
        let mut rel = Vec::new();
        self.walk_strings(&value, path, scope, false, &mut rel, strict);
    }

    /// Checks every string below `v`; `rel` holds the keys walked from the
    /// start (indexes left out), for `strict`.
    fn walk_strings<'v>(
        &mut self,
        v: &'v Value,
        path: &Path,
        scope: &Scope<'_>,
        in_list: bool,
        rel: &mut Vec<&'v str>,
        strict: fn(&[&str]) -> bool,
    ) {
        match v {
            Value::String(s) => {
                self.lenient = !strict(rel);
                self.check_string(s, path, scope, in_list);
                self.lenient = false;
            }
            Value::Array(a) => {
                // A whole-array reference may stand alone in command and args.
                let list_ok = matches!(path.last(), Some(crate::path::Seg::Key(k)) if k == "command" || k == "args");
                for (i, x) in a.iter().enumerate() {
                    self.walk_strings(x, &path.idx(i), scope, list_ok, rel, strict);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    rel.push(k);
                    self.walk_strings(x, &path.key_owned(k), scope, false, rel, strict);
                    rel.pop();
                }
            }
            _ => {}
        }
    }

    /// Checks the references in one string. `isolated_ok`: the string is an
    /// element of a list, where `$(params.a[*])` alone expands to elements.
    pub(super) fn check_string(
        &mut self,
        s: &str,
        path: &Path,
        scope: &Scope<'_>,
        isolated_ok: bool,
    ) {
        for expr in refs::scan(s) {
            let alone = isolated_ok && s.len() == expr.len() + 3;
            let parts = match refs::split(expr) {
                Ok(p) => p,
                Err(m) => {
                    self.ref_err(path, m);
                    continue;
                }
            };
            match parts.first() {
                Some(Part::Name("params")) => self.param_reference(expr, &parts, path, scope, alone),
                Some(Part::Name("context")) => self.context_reference(expr, &parts, path, scope),
                Some(Part::Name("workspaces")) => self.workspace_reference(expr, &parts, path, scope),
                Some(Part::Name("results")) => match parts.as_slice() {
                    [_, Part::Name(r), Part::Name("path")] if scope.pipeline.is_none() || matches!(scope.site, Site::Task { .. }) => {
                        if !scope.task_results.contains(r) {
                            self.ref_err(path, format!("$({expr}) refers to result {r:?}, which the Task does not declare{}", suggest(r, scope.task_results.iter().copied())));
                        }
                    }
                    _ => self.ref_err(path, format!("$({expr}) is not a valid reference: expected $(results.<name>.path) inside a Task")),
                },
                Some(Part::Name("steps")) => self.steps_reference(expr, &parts, path, scope),
                Some(Part::Name("step")) => match parts.as_slice() {
                    [_, Part::Name("results"), Part::Name(r), Part::Name("path")] => {
                        if !scope.step_results.contains(r) {
                            self.ref_err(path, format!("$({expr}) refers to step result {r:?}, which this step does not declare{}", suggest(r, scope.step_results.iter().copied())));
                        }
                    }
                    _ => self.ref_err(path, format!("$({expr}) is not a valid reference: expected $(step.results.<name>.path)")),
                },
                Some(Part::Name("tasks")) => self.tasks_reference(expr, &parts, path, scope, alone),
                Some(Part::Name("inputs")) if matches!(parts.get(1), Some(Part::Name("params"))) => {
                    let short = expr.trim_start_matches("inputs.");
                    self.warn(path, format!("$({expr}) is deprecated: use $({short})"));
                    self.param_reference(short, &parts[1..], path, scope, alone);
                }
                Some(Part::Name("resources" | "inputs" | "outputs")) => {
                    self.ref_err(path, format!("$({expr}) refers to PipelineResources, which were removed from Tekton: use params, results and workspaces"));
                }
                _ => {}
            }
        }
    }

    /// `$(params.<name>…)`: a declared param, used as its type allows (a
    /// whole array or object only alone in a list).
    fn param_reference(
        &mut self,
        expr: &str,
        parts: &[Part<'_>],
        path: &Path,
        scope: &Scope<'_>,
        alone: bool,
    ) {
        let Some(r) = refs::param_ref(parts, &|n| scope.params.iter().any(|p| p.name == n)) else {
            self.ref_err(path, format!("$({expr}) is not a valid param reference"));
            return;
        };
        let Some(spec) = scope.params.iter().find(|p| p.name == r.name) else {
            let names = scope.params.iter().map(|p| p.name.as_str());
            let owner = if matches!(scope.site, Site::Task { .. }) {
                "the Task"
            } else {
                "the Pipeline"
            };
            self.ref_err(
                path,
                format!(
                    "$({expr}) refers to param {:?}, which {owner} does not declare{}",
                    r.name,
                    suggest(&r.name, names)
                ),
            );
            return;
        };
        match (spec.kind(), r.star, r.index, r.key) {
            ("string", false, None, None) => {}
            ("string", ..) => self.ref_err(path, format!("$({expr}): param {:?} is a string: use $(params.{})", r.name, r.name)),
            // `$(params.a)` of an array param is the whole array, like `[*]`.
            ("array", _, None, None) | ("object", true, ..)
                if !alone => {
                    self.ref_err(
                        path,
                        format!("$({expr}) expands to several values: it must stand alone as an element of a list (e.g. an args entry)"),
                    );
                }
            ("array", _, None, None) | ("object", true, ..) => {}
            ("array", false, Some(_), None) => {}
            ("array", ..) => self.ref_err(
                path,
                format!("$({expr}): param {:?} is an array: use $(params.{}[*]) for all elements or $(params.{}[N]) for one", r.name, r.name, r.name),
            ),
            ("object", false, None, Some(k))
                if !spec.properties.is_empty() && !spec.properties.contains_key(k) => {
                    self.ref_err(
                        path,
                        format!("$({expr}): object param {:?} has no key {k:?}{}", r.name, suggest(k, spec.properties.keys().map(String::as_str))),
                    );
                }
            ("object", false, None, Some(_)) => {}
            ("object", ..) => self.ref_err(path, format!("$({expr}): param {:?} is an object: use $(params.{}.<key>) or $(params.{}[*])", r.name, r.name, r.name)),
            _ => {}
        }
    }

    /// `$(context.…)`: one of the Task's variables, or of the Pipeline's
    /// inside a Pipeline.
    fn context_reference(
        &mut self,
        expr: &str,
        parts: &[Part<'_>],
        path: &Path,
        scope: &Scope<'_>,
    ) {
        const TASK: &[&str] = &[
            "taskRun.name",
            "taskRun.namespace",
            "taskRun.uid",
            "task.name",
            "task.retry-count",
        ];
        const PIPELINE: &[&str] = &[
            "pipelineRun.name",
            "pipelineRun.namespace",
            "pipelineRun.uid",
            "pipeline.name",
            "pipelineTask.retries",
        ];
        let name = parts[1..]
            .iter()
            .map(|p| match p {
                Part::Name(n) => (*n).to_string(),
                Part::Star => "[*]".into(),
                Part::Index(i) => format!("[{i}]"),
            })
            .collect::<Vec<_>>()
            .join(".");
        let mut allowed: Vec<&str> = Vec::new();
        // In a PipelineTask's fields, Task variables are left for the TaskRun
        // to substitute (Tekton passes them through), so they are valid too.
        allowed.extend(TASK);
        if scope.pipeline.is_some() {
            allowed.extend(PIPELINE);
        }
        if !allowed.contains(&name.as_str()) {
            let list: Vec<String> = allowed.iter().map(|a| format!("context.{a}")).collect();
            let hint = suggest(&format!("context.{name}"), list.iter().map(String::as_str));
            self.ref_err(
                path,
                format!(
                    "$({expr}) is not a known variable here: expected one of {}{hint}",
                    list.join(", ")
                ),
            );
        }
    }

    /// `$(workspaces.<name>.<property>)`: a declared workspace and one of
    /// its properties (a PipelineTask's fields check only `.bound`).
    fn workspace_reference(
        &mut self,
        expr: &str,
        parts: &[Part<'_>],
        path: &Path,
        scope: &Scope<'_>,
    ) {
        let in_task = matches!(scope.site, Site::Task { .. });
        match parts {
            // In a PipelineTask's fields only `.bound` is the Pipeline's; the
            // rest passes through to the TaskRun, which substitutes it.
            [_, _, Part::Name(prop)] if !in_task && *prop != "bound" => {}
            [_, Part::Name(w), Part::Name(prop)] => {
                let props: &[&str] = if in_task { &["path", "bound", "claim", "volume"] } else { &["bound"] };
                if !scope.workspaces.contains(w) {
                    let owner = if in_task { "the Task" } else { "the Pipeline" };
                    // Tekton's webhook does not check workspace references
                    // (official catalog tasks carry such mistakes): a warning.
                    self.warn(path, format!("$({expr}) refers to workspace {w:?}, which {owner} does not declare{}; it would be left as written", suggest(w, scope.workspaces.iter().copied())));
                } else if !props.contains(prop) {
                    self.ref_err(path, format!("$({expr}): expected .{} after the workspace name", props.join(", .")));
                }
            }
            _ => self.ref_err(path, format!("$({expr}) is not a valid reference: expected $(workspaces.<name>.path|bound|claim|volume)")),
        }
    }

    /// `$(steps.<step>.exitCode.path)` or `$(steps.<step>.results.<name>)`:
    /// a step the Task has, and a result it declares.
    fn steps_reference(&mut self, expr: &str, parts: &[Part<'_>], path: &Path, scope: &Scope<'_>) {
        let find = |n: &str| scope.steps.iter().find(|(name, _)| name == n);
        match parts {
            [_, Part::Name(step), Part::Name("exitCode"), Part::Name("path")] => {
                let name = step.strip_prefix("step-").unwrap_or(step);
                if find(name).is_none() {
                    let names: Vec<String> = scope.steps.iter().map(|(n, _)| format!("step-{n}")).collect();
                    self.ref_err(path, format!("$({expr}) refers to step {step:?}, which the Task does not have{}", suggest(step, names.iter().map(String::as_str))));
                }
            }
            [_, Part::Name(step), Part::Name("results"), Part::Name(r), ..] => match find(step) {
                None => {
                    let names = scope.steps.iter().map(|(n, _)| n.as_str());
                    self.ref_err(path, format!("$({expr}) refers to step {step:?}, which the Task does not have{}", suggest(step, names)));
                }
                Some((_, Some(results))) => {
                    if !results.iter().any(|x| x == r) {
                        self.ref_err(path, format!("$({expr}): step {step:?} declares no result {r:?}{}", suggest(r, results.iter().map(String::as_str))));
                    }
                }
                Some((_, None)) => {}
            },
            _ => self.ref_err(path, format!("$({expr}) is not a valid reference: expected $(steps.step-<name>.exitCode.path) or $(steps.<name>.results.<result>)")),
        }
    }

    /// `$(tasks.…)` inside a Pipeline: the aggregate status (finally tasks
    /// only), or another task's status, matrix length or declared result.
    fn tasks_reference(
        &mut self,
        expr: &str,
        parts: &[Part<'_>],
        path: &Path,
        scope: &Scope<'_>,
        alone: bool,
    ) {
        let Some(ctx) = scope.pipeline else {
            self.ref_err(path, format!("$({expr}) is only valid inside a Pipeline"));
            return;
        };
        let (in_finally, self_task) = match scope.site {
            Site::PipelineTask {
                in_finally,
                self_task,
            } => (Some(in_finally), Some(self_task)),
            Site::Task {
                in_finally,
                self_task,
            } => (in_finally, self_task),
            Site::PipelineResults => (None, None),
        };
        let finally_only =
            |what: &str| format!("$({expr}): {what} is only available to finally tasks");
        match parts {
            [_, Part::Name("status")] => {
                if in_finally != Some(true) {
                    self.ref_err(path, finally_only("the aggregate status of tasks"));
                }
            }
            [_, Part::Name(t), rest @ ..] => {
                // Pipeline results may also come from finally tasks.
                let known = ctx.tasks.contains(t)
                    || (scope.site == Site::PipelineResults && ctx.finally.contains(t));
                if !known {
                    let why = if ctx.finally.contains(t) {
                        format!(
                            "$({expr}) refers to finally task {t:?}: only results and status of `tasks` can be referenced"
                        )
                    } else {
                        format!(
                            "$({expr}) refers to task {t:?}, which the Pipeline does not have{}",
                            suggest(t, ctx.task_names())
                        )
                    };
                    self.ref_err(path, why);
                    return;
                }
                if self_task == Some(*t) {
                    self.ref_err(
                        path,
                        format!("$({expr}): a task cannot use its own results"),
                    );
                    return;
                }
                match rest {
                    [Part::Name("status" | "reason")] => {
                        if in_finally != Some(true) {
                            self.ref_err(path, finally_only("a task's status"));
                        }
                    }
                    [Part::Name("matrix"), Part::Name("length")] | [Part::Name("matrix"), Part::Name(_), Part::Name("length")] => {}
                    [Part::Name("results"), Part::Name(r), tail @ ..] => {
                        if let Some(Some(results)) = ctx.results.get(t)
                            && let Some(m) = task_result_problem(expr, t, results, r, tail, alone)
                        {
                            self.ref_err(path, m);
                        }
                    }
                    _ => self.ref_err(
                        path,
                        format!("$({expr}) is not a valid reference: expected $(tasks.<task>.results.<name>), $(tasks.<task>.status) or $(tasks.<task>.matrix.length)"),
                    ),
                }
            }
            _ => self.ref_err(path, format!("$({expr}) is not a valid reference")),
        }
    }
}

/// What is wrong with `$(tasks.<t>.results.<r>…)` (`expr`), where task `t`
/// is known to declare `results`: `r` must be one of them, `[*]` of an
/// array or object must stand alone, and a key of an object result must
/// be one of its properties.
fn task_result_problem(
    expr: &str,
    t: &str,
    results: &[&TaskResult],
    r: &str,
    tail: &[Part<'_>],
    alone: bool,
) -> Option<String> {
    let Some(res) = results.iter().find(|x| x.name == r) else {
        let names: Vec<&str> = results.iter().map(|x| x.name.as_str()).collect();
        return Some(format!(
            "$({expr}): task {t:?} declares no result {r:?}{}",
            suggest(r, names.iter().copied())
        ));
    };
    if matches!(tail, [Part::Star]) && !alone && res.kind() != "string" {
        return Some(format!(
            "$({expr}) expands to several values: it must stand alone as an element of a list"
        ));
    }
    match tail {
        [Part::Name(k)]
            if res.kind() == "object"
                && !res.properties.is_empty()
                && !res.properties.contains_key(*k) =>
        {
            Some(format!("$({expr}): object result {r:?} has no key {k:?}"))
        }
        _ => None,
    }
}
