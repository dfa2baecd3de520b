//! Tektite's engine: pure functions from what is observed to what should be.
//!
//! What it is for: variable substitution (`subst`), building the Pod of a
//! TaskRun (`pod`, after `stepaction` has inlined the StepActions its steps
//! name), reading a TaskRun's status back from its Pod (`status`),
//! and planning PipelineRuns. The Kubernetes controller and the local runner
//! execute its plans.
//!
//! What it must not depend on: a Kubernetes client, tokio, the clock or any
//! I/O. Time comes in as an argument; image entrypoints come in as resolved
//! data (`pod::ImageCommands`).

pub mod concurrency;
pub mod dora;
pub mod matrix;
pub mod names;
pub mod params;
pub mod pipelinerun;
pub mod pod;
pub mod podman;
pub mod preflight;
pub mod quantity;
pub mod recent;
pub mod remote;
pub mod reuse;
pub mod sources;
pub mod status;
pub mod stepaction;
pub mod subst;
pub mod taskrun;
pub mod trace;
