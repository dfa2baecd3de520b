//! Checks a document against the CRD schema generated from our types, the way
//! the API server does with strict field validation: unknown fields (with a
//! "did you mean"), wrong types, missing required fields and values outside an
//! enum are all reported in one pass. Nulls are dropped, as the API server
//! prunes them.

use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

use crate::diag::suggest;
use crate::path::{Path, Seg};

/// ObjectMeta fields a user may write (the CRD schema leaves metadata open).
const METADATA_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
];

/// The schema of one kind, read on first use from the schemas embedded at
/// build time (`crds/schemas/`, compact JSON). `crds/` is generated from
/// the types and drift-checked by the tests, so this is the same schema as
/// generating it, at a fortieth of the start-up cost (3 ms for a TaskRun
/// instead of 110 ms; 9 ms from the CRD's YAML).
fn schema_of(kind: &str) -> Option<&'static JSONSchemaProps> {
    static TASK: OnceLock<Option<JSONSchemaProps>> = OnceLock::new();
    static TASKRUN: OnceLock<Option<JSONSchemaProps>> = OnceLock::new();
    static PIPELINE: OnceLock<Option<JSONSchemaProps>> = OnceLock::new();
    static PIPELINERUN: OnceLock<Option<JSONSchemaProps>> = OnceLock::new();
    static STEPACTION: OnceLock<Option<JSONSchemaProps>> = OnceLock::new();
    let (cell, text) = match kind {
        "Task" => (
            &TASK,
            include_str!("../../../crds/schemas/tekton.dev_tasks.json"),
        ),
        "TaskRun" => (
            &TASKRUN,
            include_str!("../../../crds/schemas/tekton.dev_taskruns.json"),
        ),
        "Pipeline" => (
            &PIPELINE,
            include_str!("../../../crds/schemas/tekton.dev_pipelines.json"),
        ),
        "PipelineRun" => (
            &PIPELINERUN,
            include_str!("../../../crds/schemas/tekton.dev_pipelineruns.json"),
        ),
        "StepAction" => (
            &STEPACTION,
            include_str!("../../../crds/schemas/tekton.dev_stepactions.json"),
        ),
        _ => return None,
    };
    cell.get_or_init(|| serde_json::from_str(text).ok())
        .as_ref()
}

/// Checks `value`, a whole document of `kind`, in place.
pub fn check(kind: &str, value: &mut Value) -> Vec<(Path, String)> {
    let mut errors = Vec::new();
    let Some(schema) = schema_of(kind) else {
        return errors;
    };
    if let Some(Value::Object(meta)) = value.get_mut("metadata") {
        let path = Path::root().key("metadata");
        meta.retain(|_, v| !v.is_null());
        for (k, v) in meta.iter() {
            if !METADATA_FIELDS.contains(&k.as_str()) {
                errors.push((
                    path.key_owned(k),
                    format!(
                        "unknown field {k:?}{}",
                        suggest(k, METADATA_FIELDS.iter().copied())
                    ),
                ));
            } else if matches!(k.as_str(), "labels" | "annotations") {
                match v {
                    Value::Object(m) => {
                        for (lk, lv) in m {
                            if !lv.is_string() {
                                errors.push((
                                    path.key_owned(k).key_owned(lk),
                                    format!("expected a string, found {}", type_name(lv)),
                                ));
                            }
                        }
                    }
                    other => errors.push((
                        path.key_owned(k),
                        format!("expected a map of strings, found {}", type_name(other)),
                    )),
                }
            } else if matches!(k.as_str(), "name" | "generateName" | "namespace") && !v.is_string()
            {
                errors.push((
                    path.key_owned(k),
                    format!("expected a string, found {}", type_name(v)),
                ));
            }
        }
    }
    let mut found = Vec::new();
    walk(value, schema, &mut found, true);
    errors.extend(found.into_iter().map(|(mut segs, message)| {
        segs.reverse();
        let mut path = Path::root();
        for s in segs {
            path.push(s);
        }
        (path, message)
    }));
    errors
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn expected(ty: &str) -> &'static str {
    match ty {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean (true or false)",
        "array" => "a list",
        "object" => "a mapping",
        _ => "a value",
    }
}

/// The schema of property `name`, looking into `allOf`/`anyOf`/`oneOf` branches.
fn property<'s>(schema: &'s JSONSchemaProps, name: &str) -> Option<&'s JSONSchemaProps> {
    if let Some(p) = schema.properties.as_ref().and_then(|p| p.get(name)) {
        return Some(p);
    }
    [&schema.all_of, &schema.any_of, &schema.one_of]
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|branch| property(branch, name))
}

/// Every property name, for "did you mean" (only computed on an error).
fn property_names(schema: &JSONSchemaProps) -> Vec<&str> {
    let mut out: Vec<&str> = schema
        .properties
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    for branch in [&schema.all_of, &schema.any_of, &schema.one_of]
        .into_iter()
        .flatten()
        .flatten()
    {
        out.extend(property_names(branch));
    }
    out
}

fn has_properties(schema: &JSONSchemaProps) -> bool {
    schema.properties.as_ref().is_some_and(|p| !p.is_empty())
        || [&schema.all_of, &schema.any_of, &schema.one_of]
            .into_iter()
            .flatten()
            .flatten()
            .any(has_properties)
}

/// An error found by [`walk`], with its path in reverse (innermost first):
/// parents add their segment only to errors, so a clean walk allocates no
/// paths at all (big pipelines have tens of thousands of nodes).
type RevError = (Vec<Seg>, String);

/// Adds `seg` to the errors found since `start` while unwinding.
fn prefix(errors: &mut [RevError], start: usize, seg: impl Fn() -> Seg) {
    for e in &mut errors[start..] {
        e.0.push(seg());
    }
}

/// Checks `value` against `schema`, adding what is wrong to `errors`: its
/// type and enum, then the fields or items below it. `top`: the document
/// itself, whose apiVersion, kind and metadata are checked elsewhere.
fn walk(value: &mut Value, schema: &JSONSchemaProps, errors: &mut Vec<RevError>, top: bool) {
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) && schema.properties.is_none() {
        return;
    }
    if schema.x_kubernetes_int_or_string == Some(true) {
        if !(value.is_string() || value.is_i64() || value.is_u64() || value.is_f64()) {
            errors.push((
                Vec::new(),
                format!(
                    "expected a string or an integer, found {}",
                    type_name(value)
                ),
            ));
        }
        return;
    }
    let ty = schema.type_.as_deref().unwrap_or("");
    if !has_type(value, ty) {
        errors.push((
            Vec::new(),
            format!("expected {}, found {}", expected(ty), type_name(value)),
        ));
        return;
    }
    if let Some(message) = enum_problem(value, schema) {
        errors.push((Vec::new(), message));
    }
    match value {
        Value::Object(map) => walk_fields(map, schema, errors, top),
        Value::Array(items) => walk_items(items, schema, errors),
        _ => {}
    }
}

/// `value` is of the schema type `ty` (any value when there is none).
fn has_type(value: &Value, ty: &str) -> bool {
    match (ty, value) {
        ("", _) => true,
        ("string", Value::String(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("number", Value::Number(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        ("array", Value::Array(_)) => true,
        ("object", Value::Object(_)) => true,
        _ => false,
    }
}

/// Why a string `value` is not one of the schema's enum values, if it is not.
fn enum_problem(value: &Value, schema: &JSONSchemaProps) -> Option<String> {
    let (Some(allowed), Value::String(s)) = (&schema.enum_, value) else {
        return None;
    };
    let names: Vec<&str> = allowed.iter().filter_map(|j| j.0.as_str()).collect();
    (!names.is_empty() && !names.contains(&s.as_str())).then(|| {
        format!(
            "{s:?} is not one of {}{}",
            names.join(", "),
            suggest(s, names.iter().copied())
        )
    })
}

/// The fields of a mapping: nulls dropped, each known field walked, an
/// unknown one reported when the schema lists its fields, required fields
/// present.
fn walk_fields(
    map: &mut serde_json::Map<String, Value>,
    schema: &JSONSchemaProps,
    errors: &mut Vec<RevError>,
    top: bool,
) {
    if map.values().any(Value::is_null) {
        map.retain(|_, v| !v.is_null());
    }
    let closed =
        has_properties(schema) && schema.x_kubernetes_preserve_unknown_fields != Some(true);
    for (k, v) in map.iter_mut() {
        if top && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let sub = property(schema, k).or(match &schema.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(sub)) => Some(&**sub),
            _ => None,
        });
        if let Some(sub) = sub {
            let start = errors.len();
            walk(v, sub, errors, false);
            prefix(errors, start, || Seg::Key(k.clone().into()));
        } else if closed {
            let hint = suggest(k, property_names(schema));
            errors.push((
                vec![Seg::Key(k.clone().into())],
                format!("unknown field {k:?}{hint}"),
            ));
        }
    }
    // Embedded objects (a volumeClaimTemplate) may omit metadata,
    // which the Kubernetes types mark as required.
    for req in schema
        .required
        .iter()
        .flatten()
        .filter(|r| *r != "metadata")
    {
        if !map.contains_key(req) {
            errors.push((
                vec![Seg::Key(req.clone().into())],
                "required field is missing".to_string(),
            ));
        }
    }
}

/// The items of a list, each walked against the items' schema (a null
/// item is an error).
fn walk_items(items: &mut [Value], schema: &JSONSchemaProps, errors: &mut Vec<RevError>) {
    let Some(JSONSchemaPropsOrArray::Schema(sub)) = &schema.items else {
        return;
    };
    for (i, item) in items.iter_mut().enumerate() {
        let start = errors.len();
        if item.is_null() {
            errors.push((
                Vec::new(),
                format!(
                    "expected {}, found null",
                    expected(sub.type_.as_deref().unwrap_or(""))
                ),
            ));
        } else {
            walk(item, sub, errors, false);
        }
        prefix(errors, start, || Seg::Index(i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs(kind: &str, mut v: Value) -> Vec<String> {
        check(kind, &mut v)
            .into_iter()
            .map(|(p, m)| format!("{p}: {m}"))
            .collect()
    }

    /// A schema that failed to load would let every document through.
    #[test]
    fn every_kind_has_its_embedded_schema() {
        for kind in crate::load::KINDS {
            let schema = schema_of(kind).unwrap_or_else(|| panic!("no schema for {kind}"));
            assert!(
                schema
                    .properties
                    .as_ref()
                    .is_some_and(|p| p.contains_key("spec")),
                "{kind}"
            );
        }
    }

    #[test]
    fn unknown_fields_anywhere_with_suggestions() {
        let e = errs(
            "Task",
            json!({"apiVersion": "tekton.dev/v1", "kind": "Task", "metadata": {"name": "t", "lables": {}},
                   "spec": {"steps": [{"name": "s", "image": "x", "env": [{"name": "A", "valeu": "1"}], "scirpt": "x"}]}}),
        );
        assert_eq!(
            e,
            vec![
                "metadata.lables: unknown field \"lables\" (did you mean \"labels\"?)",
                "spec.steps[0].env[0].valeu: unknown field \"valeu\" (did you mean \"value\"?)",
                "spec.steps[0].scirpt: unknown field \"scirpt\" (did you mean \"script\"?)",
            ]
        );
    }

    #[test]
    fn types_enums_and_required() {
        let e = errs(
            "Pipeline",
            json!({"spec": {"params": [{"name": "x", "type": "strin"}],
                            "tasks": [{"name": "a", "retries": "two", "runAfter": "b"},
                                      {"params": [{"name": "p"}]}]}}),
        );
        assert_eq!(
            e,
            vec![
                "spec.params[0].type: \"strin\" is not one of string, array, object (did you mean \"string\"?)",
                "spec.tasks[0].retries: expected an integer, found a string",
                "spec.tasks[0].runAfter: expected a list, found a string",
                "spec.tasks[1].params[0].value: required field is missing",
                "spec.tasks[1].name: required field is missing",
            ]
        );
    }

    #[test]
    fn nulls_are_pruned_and_quantities_take_numbers() {
        let mut v = json!({"spec": {"description": null, "steps": [{"image": "x",
            "computeResources": {"limits": {"cpu": 1, "memory": "1Gi"}}}]}});
        assert!(check("Task", &mut v).is_empty());
        assert!(v["spec"].get("description").is_none());
    }
}
