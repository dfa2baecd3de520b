//! The `StepAction` kind (`tekton.dev/v1beta1`, also read as `v1alpha1`,
//! whose spec is the same): a reusable step that a Task's step runs through
//! `ref: {name}`. It has no `v1` version in Tekton, so it is kept in its own
//! module rather than among the `v1` types; a step that uses it is inlined
//! by the engine (`tektite_engine::stepaction`) before its pod is built.

use k8s_openapi::api::core::v1 as core;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::v1::{ParamSpec, StepResult};

/// The apiVersion StepActions are stored and served as.
pub const API_VERSION: &str = "tekton.dev/v1beta1";
/// The older version Tekton still serves, with the same spec.
pub const ALPHA_VERSION: &str = "tekton.dev/v1alpha1";

/// What a StepAction runs: an image with a command or script, the params it
/// takes and the step results it writes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "tekton.dev",
    version = "v1beta1",
    kind = "StepAction",
    namespaced,
    category = "tekton"
)]
#[kube(
    category = "tekton-pipelines",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct StepActionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<core::EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<StepResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<core::SecurityContext>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<core::VolumeMount>,
}
