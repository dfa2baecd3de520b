//! Tektite's local runtime: runs TaskRuns and PipelineRuns on this machine
//! by executing the engine's plans, with podman (`podman kube play`) or as
//! host processes, and records every run in the local run store.
//!
//! What it must not do: decide anything the engine decides. It turns plans
//! into processes and observations back into the engine's inputs.

pub mod beneath;
pub mod live;
pub mod logs;
pub mod mask;
pub mod podman_logs;
pub mod prepare;
pub mod probe;
pub mod process;
pub mod procs;
pub mod runner;
pub mod runtime;
pub mod store;
pub mod tmpfs;
pub mod values;
