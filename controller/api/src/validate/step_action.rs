//! StepAction specs, checked as Tekton's webhook checks them: an image,
//! `script` xor `command`, no param in a script, every `$(params.…)` naming
//! a declared param used as its type allows, volume mounts named by a single
//! param, and its step results. Other variables (`$(workspaces.…)`,
//! `$(context.…)`, `$(steps.…)`) are left for the Task that uses it.

use super::{Checker, article};
use crate::diag::suggest;
use crate::path::Path;
use crate::refs::{self, Part};
use crate::stepaction::StepActionSpec;
use crate::v1::ParamSpec;

/// A string field of a StepAction and how a param may appear in it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    /// `image`, `env[].value`, `volumeMounts[].name`: strings only.
    Scalar,
    /// `command[i]`, `args[i]`: an array param alone expands to elements.
    ListItem,
    /// `script`: no param at all.
    Script,
}

impl<'a> Checker<'_, 'a> {
    /// A StepAction's spec.
    pub(super) fn step_action_spec(&mut self, spec: &StepActionSpec, path: &Path) {
        if spec.image.as_deref().unwrap_or("").is_empty() {
            self.err(&path.key("image"), "required field is missing");
        }
        if spec.script.is_some() && !spec.command.is_empty() {
            self.err(
                &path.key("script"),
                "script and command cannot be used together: put the command in the script",
            );
        }
        self.param_specs(&spec.params, &path.key("params"), true);
        self.result_decls(
            spec.results
                .iter()
                .map(|r| (r.name.as_str(), r.type_.as_ref(), &r.properties)),
            &path.key("results"),
        );
        self.step_action_strings(spec, path);
        self.step_action_mounts(spec, path);
        if let Some(s) = &spec.script {
            self.step_action_script_results(spec, s, &path.key("script"));
        }
    }

    /// The params referenced in each string field.
    fn step_action_strings(&mut self, spec: &StepActionSpec, path: &Path) {
        if let Some(i) = &spec.image {
            self.step_action_refs(i, &path.key("image"), &spec.params, Field::Scalar);
        }
        if let Some(s) = &spec.script {
            self.step_action_refs(s, &path.key("script"), &spec.params, Field::Script);
        }
        if let Some(w) = &spec.working_dir {
            self.step_action_refs(w, &path.key("workingDir"), &spec.params, Field::Scalar);
        }
        for (key, list) in [("command", &spec.command), ("args", &spec.args)] {
            for (i, s) in list.iter().enumerate() {
                let at = path.key(key).idx(i);
                self.step_action_refs(s, &at, &spec.params, Field::ListItem);
            }
        }
        for (i, e) in spec.env.iter().enumerate() {
            if let Some(v) = &e.value {
                let at = path.key("env").idx(i).key("value");
                self.step_action_refs(v, &at, &spec.params, Field::Scalar);
            }
        }
    }

    /// One string's `$(params.…)` references: to declared params, whole
    /// arrays only alone in a list item, whole objects never, object keys
    /// declared; and none in a script.
    fn step_action_refs(&mut self, s: &str, path: &Path, params: &[ParamSpec], field: Field) {
        for expr in refs::scan(s) {
            let Ok(parts) = refs::split(expr) else {
                self.err(path, format!("malformed reference $({expr})"));
                continue;
            };
            if parts.first() != Some(&Part::Name("params")) {
                continue;
            }
            if field == Field::Script {
                self.err(path, format!("$({expr}): params cannot be used in a StepAction's script (a value could inject shell code): pass it through env and use the variable"));
                continue;
            }
            let declared = |n: &str| params.iter().any(|p| p.name == n);
            let Some(r) = refs::param_ref(&parts, &declared) else {
                self.err(path, format!("$({expr}) names no param"));
                continue;
            };
            let Some(p) = params.iter().find(|p| p.name == r.name) else {
                let names = params.iter().map(|p| p.name.as_str());
                self.err(
                    path,
                    format!(
                        "$({expr}) refers to param {:?}, which the StepAction does not declare{}",
                        r.name,
                        suggest(&r.name, names)
                    ),
                );
                continue;
            };
            let alone = field == Field::ListItem && s.len() == expr.len() + 3;
            self.step_action_param_use(expr, p, &r, alone, path);
        }
    }

    /// How a declared param is used: as its type allows.
    fn step_action_param_use(
        &mut self,
        expr: &str,
        p: &ParamSpec,
        r: &refs::ParamRef<'_>,
        alone: bool,
        path: &Path,
    ) {
        let kind = p.kind();
        let whole = r.index.is_none() && r.key.is_none();
        let problem = match kind {
            "array" if whole && !(r.star && alone) => Some(
                "a whole array can only stand alone as an item of command or args: use $(params.<name>[*]) there, or an index [i]".to_string(),
            ),
            "object" if whole => Some(
                "a whole object cannot be used in a StepAction's fields: use one of its keys, $(params.<name>.<key>)".to_string(),
            ),
            "object" if r.key.is_some_and(|k| !p.properties.contains_key(k)) => {
                let k = r.key.unwrap_or_default();
                Some(format!(
                    "object param {:?} has no key {k:?}{}",
                    p.name,
                    suggest(k, p.properties.keys().map(String::as_str))
                ))
            }
            "string" if r.star || r.index.is_some() || r.key.is_some() => Some(format!(
                "param {:?} is {} {kind}: refer to it as $(params.{})",
                p.name,
                article(kind),
                p.name
            )),
            _ => None,
        };
        if let Some(m) = problem {
            self.err(path, format!("$({expr}): {m}"));
        }
    }

    /// Volume mounts: each named by one `$(params.<name>)` of a declared
    /// param, so the Task using the StepAction picks the volume.
    fn step_action_mounts(&mut self, spec: &StepActionSpec, path: &Path) {
        for (i, m) in spec.volume_mounts.iter().enumerate() {
            let at = path.key("volumeMounts").idx(i).key("name");
            let single = refs::scan(&m.name)
                .first()
                .is_some_and(|e| m.name.len() == e.len() + 3 && e.starts_with("params"));
            if !single {
                self.err(&at, format!("{:?} is not a single param reference: a StepAction's volume mount is named $(params.<name>), so that the Task chooses the volume", m.name));
                continue;
            }
            self.step_action_refs(&m.name, &at, &spec.params, Field::Scalar);
        }
    }

    /// `$(step.results.<r>.path)` and `$(results.<r>.path)` in the script
    /// name results the StepAction declares.
    fn step_action_script_results(&mut self, spec: &StepActionSpec, script: &str, path: &Path) {
        let names: Vec<&str> = spec.results.iter().map(|r| r.name.as_str()).collect();
        for expr in refs::scan(script) {
            let Ok(parts) = refs::split(expr) else {
                continue;
            };
            let r = match parts.as_slice() {
                [Part::Name("step"), Part::Name("results"), Part::Name(r), ..] => r,
                [Part::Name("results"), Part::Name(r), ..] => r,
                _ => continue,
            };
            if !names.contains(r) {
                self.err(
                    path,
                    format!(
                        "$({expr}) refers to result {r:?}, which the StepAction does not declare{}",
                        suggest(r, names.iter().copied())
                    ),
                );
            }
        }
    }
}
