//! Task specs (a Task's, a TaskRun's or one embedded in a Pipeline): what
//! they declare, steps, sidecars, volumes and result values.

use super::{Checker, Outer, Scope, article, is_dns1123_label};
use crate::diag::suggest;
use crate::path::Path;
use crate::refs::{self, Part};
use crate::v1::*;

impl<'a> Checker<'_, 'a> {
    /// A Task's spec, or one embedded in a Pipeline (`outer`): what it
    /// declares, then each step, the step template, sidecars, volumes and
    /// result values, with the references each may make.
    pub(super) fn task_spec(&mut self, spec: &TaskSpec, path: &Path, outer: &Outer<'_>) {
        self.task_declarations(spec, path);
        let mut scope = Scope::task(spec, outer);
        self.step_action_results(spec, &mut scope);
        self.steps(spec, path, &mut scope);
        self.sidecars(spec, path, &scope);
        for (i, v) in spec.volumes.iter().enumerate() {
            self.strings_of(v, &path.key("volumes").idx(i), &scope, |_| false);
        }
        self.task_result_values(spec, path, &scope);
    }

    /// The results of steps that use a StepAction are the StepAction's:
    /// known when it is among the objects validated, else unknown (any
    /// name is taken).
    fn step_action_results(&self, spec: &TaskSpec, scope: &mut Scope<'_>) {
        for (i, s) in spec.steps.iter().enumerate() {
            let Some(r) = &s.step_ref else { continue };
            let action = r
                .name
                .as_ref()
                .filter(|_| r.resolver.is_none())
                .and_then(|n| self.catalog.step_actions.get(n));
            scope.steps[i].1 = action.map(|a| a.results.iter().map(|x| x.name.clone()).collect());
        }
    }

    /// What a Task declares: params, at least one step, and steps,
    /// sidecars, volumes, workspaces and results each named once.
    fn task_declarations(&mut self, spec: &TaskSpec, path: &Path) {
        self.param_specs(&spec.params, &path.key("params"), true);
        let steps_path = path.key("steps");
        if spec.steps.is_empty() {
            self.err(&steps_path, "a Task needs at least one step");
        }
        let named: Vec<(usize, &str)> = spec
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.name.is_empty())
            .map(|(i, s)| (i, s.name.as_str()))
            .collect();
        self.unique(named.iter().copied(), &steps_path, "name", "step name");
        self.unique(
            spec.sidecars
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.name.is_empty())
                .map(|(i, s)| (i, s.name.as_str())),
            &path.key("sidecars"),
            "name",
            "sidecar name",
        );
        self.unique(
            spec.volumes
                .iter()
                .enumerate()
                .map(|(i, v)| (i, v.name.as_str())),
            &path.key("volumes"),
            "name",
            "volume name",
        );
        self.task_workspace_decls(&spec.workspaces, &path.key("workspaces"));
        self.result_decls(
            spec.results
                .iter()
                .map(|r| (r.name.as_str(), r.type_.as_ref(), &r.properties)),
            &path.key("results"),
        );
    }

    /// A Task's workspace declarations: each named, and names and mount
    /// paths (by default `/workspace/<name>`) used once.
    fn task_workspace_decls(&mut self, workspaces: &[WorkspaceDeclaration], path: &Path) {
        self.unique(
            workspaces
                .iter()
                .enumerate()
                .map(|(i, w)| (i, w.name.as_str())),
            path,
            "name",
            "workspace",
        );
        let mounts: Vec<(usize, String)> = workspaces
            .iter()
            .enumerate()
            .map(|(i, w)| {
                (
                    i,
                    w.mount_path
                        .clone()
                        .unwrap_or_else(|| format!("/workspace/{}", w.name)),
                )
            })
            .collect();
        self.unique(
            mounts.iter().map(|(i, m)| (*i, m.as_str())),
            path,
            "mountPath",
            "workspace mountPath",
        );
        for (i, w) in workspaces.iter().enumerate() {
            if w.name.is_empty() {
                self.err(&path.idx(i).key("name"), "required field is missing");
            }
        }
    }

    /// Each step (its fields, then its references, with its own results in
    /// scope), and the step template's references and mounts.
    fn steps<'s>(&mut self, spec: &'s TaskSpec, path: &Path, scope: &mut Scope<'s>) {
        let steps_path = path.key("steps");
        let template_image = spec.step_template.as_ref().and_then(|t| t.image.as_ref());
        for (i, step) in spec.steps.iter().enumerate() {
            let sp = steps_path.idx(i);
            self.step(step, &sp, template_image.is_some(), spec);
            scope.step_results = step.results.iter().map(|r| r.name.as_str()).collect();
            self.strings_of(step, &sp, scope, step_field_is_checked);
        }
        scope.step_results = Vec::new();
        if let Some(t) = &spec.step_template {
            self.strings_of(t, &path.key("stepTemplate"), scope, |_| false);
            self.volume_mounts(
                &t.volume_mounts,
                &path.key("stepTemplate").key("volumeMounts"),
            );
        }
    }

    /// Each sidecar: a name (a DNS-1123 label, not the reserved one), an
    /// image, script or command, workspaces the Task declares, and its
    /// references.
    fn sidecars(&mut self, spec: &TaskSpec, path: &Path, scope: &Scope<'_>) {
        for (i, s) in spec.sidecars.iter().enumerate() {
            let sp = path.key("sidecars").idx(i);
            // An unnamed sidecar runs as `sidecar-unnamed-<i>`, as steps do.
            if s.name == "tekton-log-results" {
                self.err(&sp.key("name"), "\"tekton-log-results\" is reserved");
            } else if !s.name.is_empty() && !is_dns1123_label(&s.name) {
                self.err(
                    &sp.key("name"),
                    format!(
                        "{:?} is not a valid sidecar name: expected a DNS-1123 label",
                        s.name
                    ),
                );
            }
            if s.image.as_deref().unwrap_or("").is_empty() {
                self.err(&sp.key("image"), "required field is missing");
            }
            if s.script.is_some() && !s.command.is_empty() {
                self.err(
                    &sp.key("script"),
                    "script and command cannot be used together",
                );
            }
            for (j, w) in s.workspaces.iter().enumerate() {
                if !scope.workspaces.contains(&w.name.as_str()) {
                    self.err(
                        &sp.key("workspaces").idx(j).key("name"),
                        format!(
                            "workspace {:?} is not declared by the Task{}",
                            w.name,
                            suggest(&w.name, scope.workspaces.iter().copied())
                        ),
                    );
                }
            }
            self.strings_of(s, &sp, scope, |_| false);
        }
    }

    /// The values of a Task's results: each a string
    /// `$(steps.<step>.results.<name>)` naming a step result.
    fn task_result_values(&mut self, spec: &TaskSpec, path: &Path, scope: &Scope<'_>) {
        for (i, r) in spec.results.iter().enumerate() {
            let Some(value) = &r.value else { continue };
            let vp = path.key("results").idx(i).key("value");
            match value {
                ParamValue::String(s) => {
                    let ok = s
                        .strip_prefix("$(")
                        .and_then(|x| x.strip_suffix(')'))
                        .and_then(|e| refs::split(e).ok())
                        .is_some_and(|parts| {
                            matches!(
                                parts.as_slice(),
                                [
                                    Part::Name("steps"),
                                    Part::Name(_),
                                    Part::Name("results"),
                                    Part::Name(_)
                                ]
                            )
                        });
                    if !ok {
                        self.err(&vp, format!("{s:?} is not a step result reference: expected $(steps.<step>.results.<name>)"));
                    } else {
                        self.check_string(s, &vp, scope, false);
                    }
                }
                other => self.err(
                    &vp,
                    format!(
                        "expected a string $(steps.<step>.results.<name>), found {} {}",
                        article(other.kind()),
                        other.kind()
                    ),
                ),
            }
        }
    }

    /// One step: its name, what it runs (a StepAction, or an image),
    /// script or command, timeout, mounts, workspaces, results, `when` and
    /// output files.
    fn step(&mut self, s: &Step, sp: &Path, template_image: bool, spec: &TaskSpec) {
        if !s.name.is_empty() && !is_dns1123_label(&s.name) {
            self.err(
                &sp.key("name"),
                format!("{:?} is not a valid step name: expected lower-case letters, digits and '-', at most 63 characters (DNS-1123 label)", s.name),
            );
        }
        if let Some(r) = &s.step_ref {
            self.step_action_ref(s, r, sp);
        } else {
            if s.image.as_deref().unwrap_or("").is_empty() && !template_image {
                self.err(
                    &sp.key("image"),
                    "required field is missing (or set stepTemplate.image)",
                );
            }
            if !s.params.is_empty() {
                self.err(
                    &sp.key("params"),
                    "params are only for steps that use a StepAction (ref)",
                );
            }
        }
        if s.script.is_some() && !s.command.is_empty() {
            self.err(
                &sp.key("script"),
                "script and command cannot be used together: put the command in the script",
            );
        }
        self.duration(s.timeout.as_ref(), &sp.key("timeout"));
        self.on_error(s.on_error.as_deref(), &sp.key("onError"));
        self.volume_mounts(&s.volume_mounts, &sp.key("volumeMounts"));
        for (j, w) in s.workspaces.iter().enumerate() {
            if !spec.workspaces.iter().any(|d| d.name == w.name) {
                let names = spec.workspaces.iter().map(|d| d.name.as_str());
                self.err(
                    &sp.key("workspaces").idx(j).key("name"),
                    format!(
                        "workspace {:?} is not declared by the Task{}",
                        w.name,
                        suggest(&w.name, names)
                    ),
                );
            }
        }
        self.result_decls(
            s.results
                .iter()
                .map(|r| (r.name.as_str(), r.type_.as_ref(), &r.properties)),
            &sp.key("results"),
        );
        for (j, w) in s.when.iter().enumerate() {
            self.when(w, &sp.key("when").idx(j));
        }
        for (label, cfg) in [
            ("stdoutConfig", &s.stdout_config),
            ("stderrConfig", &s.stderr_config),
        ] {
            if let Some(c) = cfg
                && c.path.as_deref().is_some_and(|p| p.is_empty())
            {
                self.err(&sp.key(label).key("path"), "path must not be empty");
            }
        }
    }

    /// A step that uses a StepAction (`ref`): the fields the StepAction
    /// defines are not set on the step, and the reference is complete.
    fn step_action_ref(&mut self, s: &Step, r: &StepRef, sp: &Path) {
        let mut set = Vec::new();
        if s.image.is_some() {
            set.push("image");
        }
        if !s.command.is_empty() {
            set.push("command");
        }
        if !s.args.is_empty() {
            set.push("args");
        }
        if s.script.is_some() {
            set.push("script");
        }
        if s.working_dir.is_some() {
            set.push("workingDir");
        }
        if !s.env.is_empty() {
            set.push("env");
        }
        if !s.volume_mounts.is_empty() {
            set.push("volumeMounts");
        }
        if !s.results.is_empty() {
            set.push("results");
        }
        for f in set {
            self.err(&sp.key(f), format!("{f} cannot be set on a step that uses a StepAction (ref): the StepAction defines it"));
        }
        self.resolver_ref(
            r.name.as_deref(),
            r.resolver.as_deref(),
            &r.params,
            &sp.key("ref"),
        );
        let known = r
            .name
            .as_deref()
            .filter(|_| r.resolver.is_none())
            .and_then(|n| Some((n, *self.catalog.step_actions.get(n)?)));
        if let Some((name, action)) = known {
            self.step_action_params(s, name, action, sp);
        }
    }

    /// The params a step gives the StepAction it names, when that one is
    /// among the objects validated: each declared by it, of its type, and
    /// every one it needs given.
    fn step_action_params(
        &mut self,
        s: &Step,
        name: &str,
        action: &crate::stepaction::StepActionSpec,
        sp: &Path,
    ) {
        let who = format!("StepAction {name:?}");
        let pp = sp.key("params");
        for (j, p) in s.params.iter().enumerate() {
            if !action.params.iter().any(|d| d.name == p.name) {
                let names = action.params.iter().map(|d| d.name.as_str());
                self.err(
                    &pp.idx(j).key("name"),
                    format!(
                        "{who} declares no param {:?}{}",
                        p.name,
                        suggest(&p.name, names)
                    ),
                );
            }
        }
        self.param_values(&s.params, &action.params, &pp, &pp, &|_| false, &who);
    }

    /// Volume mounts: not under `/tekton/` (except `/tekton/home`), and no
    /// name reserved for Tektite.
    fn volume_mounts(&mut self, mounts: &[k8s_openapi::api::core::v1::VolumeMount], path: &Path) {
        for (i, m) in mounts.iter().enumerate() {
            let mp = path.idx(i);
            if m.mount_path.starts_with("/tekton/") && !m.mount_path.starts_with("/tekton/home") {
                self.err(&mp.key("mountPath"), format!("{:?} is reserved: volumes cannot be mounted under /tekton/ (except /tekton/home)", m.mount_path));
            }
            if m.name.starts_with("tekton-internal-") {
                self.err(
                    &mp.key("name"),
                    format!(
                        "{:?} is reserved: names starting with tekton-internal- belong to Tektite",
                        m.name
                    ),
                );
            }
        }
    }
}

/// The step fields whose variable references Tekton's webhook checks.
fn step_field_is_checked(rel: &[&str]) -> bool {
    matches!(
        rel,
        ["name" | "image" | "workingDir" | "script" | "onError" | "command" | "args"]
            | ["env", "value"]
            | ["volumeMounts", "name" | "mountPath" | "subPath"]
    )
}
