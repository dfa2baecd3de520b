//! `tekton.dev/v1beta1` input, converted to `v1` on the JSON value.
//!
//! Renamed and moved fields are rewritten (step `resources` →
//! `computeResources`, PipelineRun `serviceAccountName` →
//! `taskRunTemplate.serviceAccountName`, `taskRef.bundle` → the bundles
//! resolver, …). Every move is recorded so that errors found later on the v1
//! value are reported at the path the user wrote. Features removed from
//! Tekton (PipelineResources, conditions, ClusterTask) are errors that say
//! what to use instead.

use serde_json::{Map, Value, json};

use crate::path::Path;

/// What converting one document did.
#[derive(Debug, Default)]
pub struct Conversion {
    /// `(v1 path, v1beta1 path)` of every moved field.
    renames: Vec<(Path, Path)>,
    pub errors: Vec<(Path, String)>,
    pub warnings: Vec<(Path, String)>,
}

impl Conversion {
    /// The path, as written in the v1beta1 document, of a v1 path.
    pub fn original(&self, path: &Path) -> Path {
        // Inner moves were recorded after the moves of their parents, and
        // name the parent by its new name: undo them newest first.
        let mut p = path.clone();
        for (new, old) in self.renames.iter().rev() {
            if p.starts_with(new) {
                p = p.rebase(new, old);
            }
        }
        p
    }

    fn rename(
        &mut self,
        obj: &mut Map<String, Value>,
        from: &'static str,
        to: &'static str,
        path: &Path,
    ) {
        self.move_to(obj, from, path, &[to], path);
    }

    /// Moves `obj[from]` to `obj[to[0]][to[1]]…`, creating mappings on the way.
    fn move_to(
        &mut self,
        obj: &mut Map<String, Value>,
        from: &'static str,
        from_path: &Path,
        to: &[&'static str],
        base: &Path,
    ) {
        let Some(value) = obj.remove(from) else {
            return;
        };
        let mut target = &mut *obj;
        let mut new_path = base.clone();
        for (i, key) in to.iter().enumerate() {
            new_path = new_path.key(key);
            if i + 1 == to.len() {
                if target.contains_key(*key) {
                    self.errors.push((
                        from_path.key(from),
                        format!("set either the v1beta1 field {from:?} or its v1 form {new_path}, not both"),
                    ));
                    return;
                }
                target.insert((*key).to_string(), value);
                self.renames.push((new_path, from_path.key(from)));
                return;
            }
            let slot = target
                .entry((*key).to_string())
                .or_insert_with(|| json!({}));
            match slot {
                Value::Object(m) => target = m,
                _ => return,
            }
        }
    }
}

const PIPELINE_RESOURCES: &str = "PipelineResources were removed in tekton.dev/v1: share files through workspaces \
     (e.g. the git-clone task writing into a workspace) and pass values with params and results";

/// Step fields v1beta1 inherited from Container that v1 dropped; Tekton keeps
/// them only as an annotation and never applies them.
const DEPRECATED_STEP_FIELDS: &[&str] = &[
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "stdin",
    "stdinOnce",
    "tty",
];

/// Converts a v1beta1 document of `kind` to v1 in place.
pub fn convert(kind: &str, doc: &mut Value) -> Conversion {
    let mut c = Conversion::default();
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("apiVersion".into(), json!(crate::v1::API_VERSION));
    }
    let root = Path::root();
    let spec_path = root.key("spec");
    if let Some(spec) = doc.get_mut("spec").and_then(Value::as_object_mut) {
        match kind {
            "Task" => task_spec(&mut c, spec, &spec_path, true),
            "Pipeline" => pipeline_spec(&mut c, spec, &spec_path),
            "TaskRun" => taskrun_spec(&mut c, spec, &spec_path),
            "PipelineRun" => pipelinerun_spec(&mut c, spec, &spec_path),
            _ => {}
        }
    }
    let status_path = root.key("status");
    if let Some(status) = doc.get_mut("status").and_then(Value::as_object_mut) {
        match kind {
            "TaskRun" => {
                c.rename(status, "taskResults", "results", &status_path);
                status.remove("cloudEvents");
                status.remove("resourcesResult");
                if let Some(ts) = status.get_mut("taskSpec").and_then(Value::as_object_mut) {
                    ts.remove("resources");
                    task_spec(&mut c, ts, &status_path.key("taskSpec"), false);
                }
            }
            "PipelineRun" => {
                c.rename(status, "pipelineResults", "results", &status_path);
                // The embedded-status maps were replaced by childReferences.
                status.remove("taskRuns");
                status.remove("runs");
                if let Some(ps) = status
                    .get_mut("pipelineSpec")
                    .and_then(Value::as_object_mut)
                {
                    pipeline_spec(&mut c, ps, &status_path.key("pipelineSpec"));
                }
            }
            _ => {}
        }
    }
    c
}

/// Reports a removed field and drops it, so it is not also an unknown field.
fn removed_resources(c: &mut Conversion, obj: &mut Map<String, Value>, path: &Path) {
    if obj.remove("resources").is_some() {
        c.errors
            .push((path.key("resources"), PIPELINE_RESOURCES.to_string()));
    }
}

fn task_spec(
    c: &mut Conversion,
    spec: &mut Map<String, Value>,
    path: &Path,
    check_resources: bool,
) {
    if check_resources {
        removed_resources(c, spec, path);
    }
    if let Some(Value::Array(steps)) = spec.get_mut("steps") {
        for (i, step) in steps.iter_mut().enumerate() {
            if let Some(step) = step.as_object_mut() {
                container(c, step, &path.key("steps").idx(i), true);
            }
        }
    }
    if let Some(Value::Array(sidecars)) = spec.get_mut("sidecars") {
        for (i, s) in sidecars.iter_mut().enumerate() {
            if let Some(s) = s.as_object_mut() {
                container(c, s, &path.key("sidecars").idx(i), false);
            }
        }
    }
    if let Some(t) = spec.get_mut("stepTemplate").and_then(Value::as_object_mut) {
        let tp = path.key("stepTemplate");
        container(c, t, &tp, true);
        if t.remove("name").is_some() {
            c.warnings.push((
                tp.key("name"),
                "stepTemplate.name does not exist in tekton.dev/v1 and is ignored".into(),
            ));
        }
    }
}

fn container(c: &mut Conversion, obj: &mut Map<String, Value>, path: &Path, is_step: bool) {
    c.rename(obj, "resources", "computeResources", path);
    if is_step {
        for field in DEPRECATED_STEP_FIELDS {
            if obj.remove(*field).is_some() {
                c.warnings.push((
                    path.key(field),
                    format!("{field} is deprecated for steps and has no effect in tekton.dev/v1: it is ignored (use a sidecar for probes and ports)"),
                ));
            }
        }
    }
}

fn task_ref(c: &mut Conversion, r: &mut Map<String, Value>, path: &Path, kind: &str) {
    if r.get("kind").and_then(Value::as_str) == Some("ClusterTask") {
        c.errors.push((
            path.key("kind"),
            "ClusterTask was removed from Tekton: use a namespaced Task, or `resolver: cluster` with params kind, name and namespace".into(),
        ));
    }
    let Some(bundle) = r.remove("bundle") else {
        return;
    };
    // A bundle reference becomes the bundles resolver, as Tekton converted it.
    let name = r.remove("name").unwrap_or(Value::Null);
    r.remove("kind");
    let bundle_path = path.key("bundle");
    if r.contains_key("resolver") {
        c.errors.push((
            bundle_path,
            "bundle cannot be combined with resolver".into(),
        ));
        return;
    }
    r.insert("resolver".into(), json!("bundles"));
    r.insert(
        "params".into(),
        json!([
            {"name": "bundle", "value": bundle},
            {"name": "name", "value": name},
            {"name": "kind", "value": kind},
        ]),
    );
    c.renames
        .push((path.key("params").idx(0).key("value"), bundle_path));
    c.renames
        .push((path.key("params").idx(1).key("value"), path.key("name")));
}

fn pipeline_task(c: &mut Conversion, t: &mut Map<String, Value>, path: &Path) {
    removed_resources(c, t, path);
    if t.remove("conditions").is_some() {
        c.errors.push((
            path.key("conditions"),
            "Conditions were removed from Tekton: guard the task with `when` expressions (input/operator/values, or cel)".into(),
        ));
    }
    if let Some(r) = t.get_mut("taskRef").and_then(Value::as_object_mut) {
        task_ref(c, r, &path.key("taskRef"), "task");
    }
    if let Some(ts) = t.get_mut("taskSpec").and_then(Value::as_object_mut) {
        task_spec(c, ts, &path.key("taskSpec"), true);
    }
}

fn pipeline_spec(c: &mut Conversion, spec: &mut Map<String, Value>, path: &Path) {
    removed_resources(c, spec, path);
    for list in ["tasks", "finally"] {
        if let Some(Value::Array(tasks)) = spec.get_mut(list) {
            for (i, t) in tasks.iter_mut().enumerate() {
                if let Some(t) = t.as_object_mut() {
                    pipeline_task(c, t, &path.key(list).idx(i));
                }
            }
        }
    }
}

fn overrides(c: &mut Conversion, obj: &mut Map<String, Value>, path: &Path) {
    for (old, new) in [
        ("stepOverrides", "stepSpecs"),
        ("sidecarOverrides", "sidecarSpecs"),
    ] {
        c.rename(obj, old, new, path);
        if let Some(Value::Array(items)) = obj.get_mut(new) {
            for (i, item) in items.iter_mut().enumerate() {
                if let Some(item) = item.as_object_mut() {
                    c.rename(item, "resources", "computeResources", &path.key(new).idx(i));
                }
            }
        }
    }
}

fn taskrun_spec(c: &mut Conversion, spec: &mut Map<String, Value>, path: &Path) {
    removed_resources(c, spec, path);
    overrides(c, spec, path);
    if let Some(r) = spec.get_mut("taskRef").and_then(Value::as_object_mut) {
        task_ref(c, r, &path.key("taskRef"), "task");
    }
    if let Some(ts) = spec.get_mut("taskSpec").and_then(Value::as_object_mut) {
        task_spec(c, ts, &path.key("taskSpec"), true);
    }
}

fn pipelinerun_spec(c: &mut Conversion, spec: &mut Map<String, Value>, path: &Path) {
    removed_resources(c, spec, path);
    if spec.remove("serviceAccountNames").is_some() {
        c.errors.push((
            path.key("serviceAccountNames"),
            "serviceAccountNames was removed: use spec.taskRunSpecs[].serviceAccountName".into(),
        ));
    }
    c.move_to(
        spec,
        "serviceAccountName",
        path,
        &["taskRunTemplate", "serviceAccountName"],
        path,
    );
    c.move_to(
        spec,
        "podTemplate",
        path,
        &["taskRunTemplate", "podTemplate"],
        path,
    );
    if spec.contains_key("timeout") && spec.contains_key("timeouts") {
        spec.remove("timeout");
        c.errors.push((
            path.key("timeout"),
            "set either timeout or timeouts, not both".into(),
        ));
    } else {
        c.move_to(spec, "timeout", path, &["timeouts", "pipeline"], path);
    }
    if spec.get("status").and_then(Value::as_str) == Some("PipelineRunCancelled") {
        spec.insert("status".into(), json!("Cancelled"));
        c.warnings.push((
            path.key("status"),
            "PipelineRunCancelled is deprecated: use Cancelled".into(),
        ));
    }
    if let Some(r) = spec.get_mut("pipelineRef").and_then(Value::as_object_mut) {
        task_ref(c, r, &path.key("pipelineRef"), "pipeline");
    }
    if let Some(ps) = spec.get_mut("pipelineSpec").and_then(Value::as_object_mut) {
        pipeline_spec(c, ps, &path.key("pipelineSpec"));
    }
    if let Some(Value::Array(specs)) = spec.get_mut("taskRunSpecs") {
        for (i, s) in specs.iter_mut().enumerate() {
            if let Some(s) = s.as_object_mut() {
                let p = path.key("taskRunSpecs").idx(i);
                c.rename(s, "taskServiceAccountName", "serviceAccountName", &p);
                c.rename(s, "taskPodTemplate", "podTemplate", &p);
                overrides(c, s, &p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelinerun_moves_are_mapped_back() {
        let mut v = json!({"apiVersion": "tekton.dev/v1beta1", "kind": "PipelineRun",
            "spec": {"serviceAccountName": "sa", "timeout": "1h", "podTemplate": {"hostNetwork": true},
                     "pipelineRef": {"name": "p", "bundle": "reg/x:1"},
                     "taskRunSpecs": [{"pipelineTaskName": "a", "taskServiceAccountName": "b",
                                       "stepOverrides": [{"name": "s", "resources": {}}]}]}});
        let c = convert("PipelineRun", &mut v);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(v["apiVersion"], "tekton.dev/v1");
        assert_eq!(v["spec"]["taskRunTemplate"]["serviceAccountName"], "sa");
        assert_eq!(v["spec"]["timeouts"]["pipeline"], "1h");
        assert_eq!(v["spec"]["pipelineRef"]["resolver"], "bundles");
        assert_eq!(v["spec"]["pipelineRef"]["params"][2]["value"], "pipeline");
        assert_eq!(
            v["spec"]["taskRunSpecs"][0]["stepSpecs"][0]["computeResources"],
            json!({})
        );
        let p: Path = "spec.timeouts.pipeline".parse().unwrap();
        assert_eq!(c.original(&p).to_string(), "spec.timeout");
        let p: Path = "spec.taskRunSpecs[0].stepSpecs[0].computeResources.limits"
            .parse()
            .unwrap();
        assert_eq!(
            c.original(&p).to_string(),
            "spec.taskRunSpecs[0].stepOverrides[0].resources.limits"
        );
        let p: Path = "spec.pipelineRef.params[0].value".parse().unwrap();
        assert_eq!(c.original(&p).to_string(), "spec.pipelineRef.bundle");
    }

    #[test]
    fn removed_features_are_errors() {
        let mut v = json!({"spec": {"resources": [], "tasks": [{"name": "a", "conditions": [],
            "taskRef": {"name": "x", "kind": "ClusterTask"}}]}});
        let c = convert("Pipeline", &mut v);
        let paths: Vec<String> = c.errors.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(
            paths,
            [
                "spec.resources",
                "spec.tasks[0].conditions",
                "spec.tasks[0].taskRef.kind"
            ]
        );
    }
}
