//! The pod ⇄ entrypoint contract: where things live inside a step's pod.
//!
//! What it is for: the paths and names the engine, the local runtime and the
//! step wrapper must agree on. It depends on nothing of ours and stays small
//! (the wrapper binary is size-budgeted). The wrapper itself is not built yet;
//! see the README's feature table.

/// Where the init container copies the entrypoint binary.
pub const BIN_DIR: &str = "/tekton/bin";
/// The entrypoint binary inside a pod.
pub const ENTRYPOINT: &str = "/tekton/bin/entrypoint";
/// Per-step run directories: `/tekton/run/<i>`.
pub const RUN_DIR: &str = "/tekton/run";
/// Task results: `/tekton/results/<name>`.
pub const RESULTS_DIR: &str = "/tekton/results";
/// Step links: `/tekton/steps/step-<name>`.
pub const STEPS_DIR: &str = "/tekton/steps";
/// Decoded scripts.
pub const SCRIPTS_DIR: &str = "/tekton/scripts";
/// `$HOME` of steps.
pub const HOME_DIR: &str = "/tekton/home";
/// Written when sidecars are ready (only pods with sidecars wait for it).
pub const READY_FILE: &str = "/tekton/downward/ready";
/// Workspaces: `/workspace/<name>`.
pub const WORKSPACE_DIR: &str = "/workspace";
/// Annotation prefix of step reports on a pod: `tektite.dev/step.<name>`.
pub const STEP_ANNOTATION_PREFIX: &str = "tektite.dev/step.";

/// The marker a step writes when it ends well: `/tekton/run/<i>/out`.
pub fn out_marker(step: usize) -> String {
    format!("{RUN_DIR}/{step}/out")
}

/// The marker a step writes when it fails: `/tekton/run/<i>/out.err`.
pub fn err_marker(step: usize) -> String {
    format!("{RUN_DIR}/{step}/out.err")
}

/// Where a step's exit code is written: `/tekton/run/<i>/status/exitCode`.
pub fn exit_code_file(step: usize) -> String {
    format!("{RUN_DIR}/{step}/status/exitCode")
}

/// The container name of a step: `step-<name>`, or `step-unnamed-<i>`.
pub fn step_container_name(name: &str, index: usize) -> String {
    if name.is_empty() {
        format!("step-unnamed-{index}")
    } else {
        format!("step-{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_tekton() {
        assert_eq!(out_marker(0), "/tekton/run/0/out");
        assert_eq!(err_marker(2), "/tekton/run/2/out.err");
        assert_eq!(exit_code_file(1), "/tekton/run/1/status/exitCode");
        assert_eq!(step_container_name("", 3), "step-unnamed-3");
        assert_eq!(step_container_name("build", 0), "step-build");
    }
}
