//! Pipeline specs: task names, workspaces, the graph of `tasks`, each
//! task (see `pipeline_task`) and the Pipeline's results.

use std::collections::{HashMap, HashSet};

use super::{
    Checker, NO_PROPERTIES, PipelineCtx, RunGives, Scope, Site, article, is_dns1123_label,
    is_whole_reference, propagated_specs,
};
use crate::dag;
use crate::path::Path;
use crate::refs;
use crate::v1::*;

impl<'a> Checker<'_, 'a> {
    /// A Pipeline's spec: params, task names and workspaces, the graph of
    /// `tasks`, each task and finally task, then the Pipeline's results.
    pub(super) fn pipeline_spec(
        &mut self,
        spec: &'a PipelineSpec,
        path: &Path,
        run: Option<&'a PipelineRunSpec>,
    ) {
        self.param_specs(&spec.params, &path.key("params"), false);
        let tasks_path = path.key("tasks");
        if spec.tasks.is_empty() {
            self.err(&tasks_path, "a Pipeline needs at least one task");
        }
        self.pipeline_task_names(spec, path);
        self.pipeline_workspace_decls(spec, path);
        let ctx = self.pipeline_ctx(spec, run);
        // Tekton's webhook checks the graph of `tasks` only; finally tasks run after all of them.
        match dag::build(&spec.tasks) {
            Ok(_) => {}
            // A task depending on itself is reported at its runAfter or reference.
            Err(dag::DagError::Cycle(c)) if c.len() == 2 && c[0] == c[1] => {}
            Err(e) => self.err(&tasks_path, e.to_string()),
        }
        for (list, items) in [("tasks", &spec.tasks), ("finally", &spec.finally)] {
            for (i, t) in items.iter().enumerate() {
                self.pipeline_task(t, &path.key(list).idx(i), list == "finally", &ctx);
            }
        }
        self.pipeline_results(spec, path, &ctx);
    }

    /// The names of `tasks` and `finally`: DNS-1123 labels, each used once
    /// across both lists.
    fn pipeline_task_names(&mut self, spec: &PipelineSpec, path: &Path) {
        let mut seen: HashMap<&str, Path> = HashMap::new();
        for (list, items) in [("tasks", &spec.tasks), ("finally", &spec.finally)] {
            for (i, t) in items.iter().enumerate() {
                let np = path.key(list).idx(i).key("name");
                if !is_dns1123_label(&t.name) {
                    self.err(
                        &np,
                        format!("{:?} is not a valid task name: expected lower-case letters, digits and '-', at most 63 characters (DNS-1123 label)", t.name),
                    );
                }
                if let Some(first) = seen.get(t.name.as_str()) {
                    self.err(
                        &np,
                        format!("duplicate task name {:?} (also at {first})", t.name),
                    );
                } else {
                    seen.insert(&t.name, np.clone());
                }
            }
        }
    }

    /// A Pipeline's workspace declarations: each named, once.
    fn pipeline_workspace_decls(&mut self, spec: &PipelineSpec, path: &Path) {
        let mut seen = HashSet::new();
        for (i, w) in spec.workspaces.iter().enumerate() {
            let wp = path.key("workspaces").idx(i).key("name");
            if w.name.is_empty() {
                self.err(&wp, "required field is missing");
            } else if !seen.insert(w.name.as_str()) {
                self.err(&wp, format!("duplicate workspace {:?}", w.name));
            }
        }
    }

    /// What the Pipeline offers references inside it: its task names and
    /// the results of each task whose spec is known.
    fn pipeline_ctx(
        &self,
        spec: &'a PipelineSpec,
        run: Option<&'a PipelineRunSpec>,
    ) -> PipelineCtx<'a> {
        let mut results = HashMap::new();
        for t in spec.tasks.iter().chain(spec.finally.iter()) {
            let known = self
                .task_of(t)
                .map(|ts| ts.results.iter().collect::<Vec<_>>());
            results.insert(t.name.as_str(), known);
        }
        let run = run.map(|r| RunGives {
            params: propagated_specs(&r.params, &spec.params),
            workspaces: r
                .workspaces
                .iter()
                .map(|w| w.name.as_str())
                .filter(|w| !spec.workspaces.iter().any(|d| d.name == *w))
                .collect(),
        });
        PipelineCtx {
            spec,
            run,
            results,
            finally: spec.finally.iter().map(|t| t.name.as_str()).collect(),
            tasks: spec.tasks.iter().map(|t| t.name.as_str()).collect(),
        }
    }

    /// A Pipeline's results: valid names, and values that reference task
    /// results, of the declared type.
    fn pipeline_results(&mut self, spec: &PipelineSpec, path: &Path, ctx: &PipelineCtx<'_>) {
        // Pipeline results declare no properties: their shape comes from the value.
        self.result_decls(
            spec.results
                .iter()
                .map(|r| (r.name.as_str(), None, &NO_PROPERTIES)),
            &path.key("results"),
        );
        let scope = Scope::pipeline(ctx, Site::PipelineResults);
        for (i, r) in spec.results.iter().enumerate() {
            let rp = path.key("results").idx(i).key("value");
            let strings = r.value.strings();
            if !strings.iter().any(|s| !refs::scan(s).is_empty()) {
                self.err(&rp, "a pipeline result must reference task results: expected $(tasks.<task>.results.<name>)");
            }
            if let Some(ty) = &r.type_ {
                let given = r.value.kind();
                let whole = matches!(&r.value, ParamValue::String(s) if is_whole_reference(s));
                if given != ty && !whole {
                    self.err(
                        &rp,
                        format!(
                            "result {:?} is declared {ty} but its value is {} {given}",
                            r.name,
                            article(given)
                        ),
                    );
                }
            }
            self.param_value(&r.value, &rp, &scope);
        }
    }

    /// The Task spec a PipelineTask runs, when it is known: embedded, or
    /// named in the catalog.
    pub(super) fn task_of(&self, t: &'a PipelineTask) -> Option<&'a TaskSpec> {
        if let Some(ts) = &t.task_spec {
            return (ts.api_version.is_none() && ts.kind.is_none()).then_some(&ts.task);
        }
        t.task_ref.as_ref().and_then(|r| self.catalog.task(r))
    }
}
