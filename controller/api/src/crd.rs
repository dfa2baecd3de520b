//! CRD generation from the `v1` types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::v1::{Pipeline, PipelineRun, Task, TaskRun};

/// The CRDs with the file names they are kept under in `crds/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("tekton.dev_tasks.yaml", Task::crd()),
        ("tekton.dev_taskruns.yaml", TaskRun::crd()),
        ("tekton.dev_pipelines.yaml", Pipeline::crd()),
        ("tekton.dev_pipelineruns.yaml", PipelineRun::crd()),
    ]
}
