//! Tektite's view of the `tekton.dev` API.
//!
//! What it is for: the `v1` types of Task, TaskRun, Pipeline and PipelineRun
//! (with status) and the `v1beta1` StepAction (`stepaction`), reading them
//! from YAML/JSON files (`load`), converting `v1beta1` input to `v1`
//! (`convert`), checking them as strictly as Tekton's
//! admission webhook (`validate`, `dag`), and generating the CRDs (`crd`).
//!
//! What it must not depend on: a Kubernetes client, tokio, or the clock.
//! It uses the pod ⇄ entrypoint contract from `tektite-entrypoint`. `kube`
//! is used with its `derive` feature only (types and CRD schemas).
//!
//! Data flow: file text → `yaml` events → JSON values → (`v1beta1`
//! conversion) → `schema` check against the CRD (unknown fields, types,
//! enums) → typed object (`v1`) → `validate` (+ `dag`) → `Diagnostic`s that
//! name file, document, line, field path and what was expected. Lines come
//! from a second, line-keeping parse (`yaml::Node`) made only when a
//! diagnostic needs one.

pub mod concurrency;
pub mod crd;
pub mod dag;
pub mod data;
pub mod diag;
pub mod load;
pub mod param;
pub mod path;
pub mod redact;
pub mod refs;
pub mod schema;
pub mod stepaction;
pub mod v1;
pub mod v1beta1;
pub mod validate;
pub mod yaml;

pub use diag::{Diagnostic, Severity};
pub use load::{LoadOutput, Loaded, LoadedData, Object, load_file, load_str};
