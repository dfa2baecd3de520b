//! CRD generation from the `v1` types.
//!
//! The schemas are structural, so the API server rejects malformed objects
//! without a webhook. Descriptions are left out: with every Kubernetes core
//! type inlined they would make the PipelineRun CRD over a megabyte.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::stepaction::StepAction;
use crate::v1::{Pipeline, PipelineRun, Task, TaskRun};

/// The CRDs with the file names they are kept under in `crds/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("tekton.dev_tasks.yaml", fixup(Task::crd())),
        ("tekton.dev_taskruns.yaml", fixup(TaskRun::crd())),
        ("tekton.dev_pipelines.yaml", fixup(Pipeline::crd())),
        ("tekton.dev_pipelineruns.yaml", fixup(PipelineRun::crd())),
        (
            "tekton.dev_stepactions.yaml",
            with_alpha_version(fixup(StepAction::crd())),
        ),
    ]
}

/// StepActions are also served as `v1alpha1`, with the same schema (as
/// Tekton does); `v1beta1` stays the storage version.
fn with_alpha_version(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    if let Some(beta) = crd.spec.versions.first().cloned() {
        let alpha = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionVersion {
            name: "v1alpha1".into(),
            storage: false,
            ..beta
        };
        crd.spec.versions.insert(0, alpha);
    }
    crd
}

/// Embedded objects (a workspace's `volumeClaimTemplate`) may omit
/// `metadata`, which the Kubernetes types mark as required.
fn fixup(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Array(req)) = m.get_mut("required") {
                    req.retain(|r| r != "metadata");
                    if req.is_empty() {
                        m.remove("required");
                    }
                }
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    walk(&mut value);
    serde_json::from_value(value).unwrap_or(crd)
}

fn strip_descriptions(v: &mut Value) {
    match v {
        Value::Object(m) => {
            // A property may itself be called "description": only drop the keyword.
            if m.get("description").is_some_and(Value::is_string) {
                m.remove("description");
            }
            m.values_mut().for_each(strip_descriptions);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

/// The files of `crds/`: name and text. Each CRD in YAML, and under
/// `schemas/` the schema of its first version in compact JSON, which
/// [`crate::schema`] embeds: read at every start of `tkt`, JSON decodes in
/// a third of the time of the YAML (3 ms instead of 9 ms for a TaskRun).
pub fn files() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, crd) in all() {
        let mut value = serde_json::to_value(&crd).unwrap_or(Value::Null);
        strip_descriptions(&mut value);
        let text = format!(
            "# Generated from controller/api/src/v1.rs by hack/gen-crds.sh. Do not edit.\n{}",
            crate::yaml::to_yaml(&value)
        );
        out.push((name.to_string(), text));
        let schema = &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        out.push((
            format!("schemas/{}", name.replace(".yaml", ".json")),
            format!("{schema}\n"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` must match the types: run hack/gen-crds.sh after changing them.
    #[test]
    fn crds_directory_matches_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
        for (name, text) in files() {
            let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            assert!(
                on_disk == text,
                "crds/{name} is out of date: run hack/gen-crds.sh"
            );
        }
    }

    #[test]
    fn crds_are_structural_with_status_and_columns() {
        for (name, crd) in all() {
            let v = crd.spec.versions.iter().find(|v| v.storage).unwrap();
            let storage = if name.contains("stepactions") {
                "v1beta1"
            } else {
                "v1"
            };
            assert_eq!(v.name, storage, "{name}");
            let schema = serde_json::to_value(
                v.schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref()),
            )
            .unwrap();
            assert_eq!(schema["type"], "object", "{name}");
            assert!(
                schema["properties"]["spec"]["properties"].is_object(),
                "{name}"
            );
            if name.contains("runs") {
                assert!(
                    v.subresources
                        .as_ref()
                        .and_then(|s| s.status.as_ref())
                        .is_some(),
                    "{name}"
                );
                let cols: Vec<&str> = v
                    .additional_printer_columns
                    .iter()
                    .flatten()
                    .map(|c| c.name.as_str())
                    .collect();
                assert_eq!(
                    cols,
                    ["Succeeded", "Reason", "StartTime", "CompletionTime"],
                    "{name}"
                );
            }
            // No $ref survives: the API server does not resolve them.
            assert!(
                !serde_json::to_string(&schema).unwrap().contains("$ref"),
                "{name}"
            );
        }
    }
}
