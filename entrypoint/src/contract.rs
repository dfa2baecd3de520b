//! The pod ⇄ entrypoint contract: where things live inside a step's pod,
//! what the report looks like, and the wrapper's own exit codes.

use serde::{Deserialize, Serialize};

/// Where the init container copies the entrypoint binary.
pub const BIN_DIR: &str = "/tekton/bin";
/// The entrypoint binary inside a pod.
pub const ENTRYPOINT: &str = "/tekton/bin/entrypoint";
/// Per-step run directories: `/tekton/run/<i>`.
pub const RUN_DIR: &str = "/tekton/run";
/// Task results: `/tekton/results/<name>`.
pub const RESULTS_DIR: &str = "/tekton/results";
/// Step links: `/tekton/steps/step-<name>` → `/tekton/run/<i>/status`.
pub const STEPS_DIR: &str = "/tekton/steps";
/// Decoded scripts.
pub const SCRIPTS_DIR: &str = "/tekton/scripts";
/// `$HOME` of steps.
pub const HOME_DIR: &str = "/tekton/home";
/// Written when sidecars are ready (only pods with sidecars wait for it).
pub const READY_FILE: &str = "/tekton/downward/ready";
/// Workspaces: `/workspace/<name>`.
pub const WORKSPACE_DIR: &str = "/workspace";
/// Default termination-message path (Kubernetes caps it at 4 KiB).
pub const TERMINATION_PATH: &str = "/tekton/termination";
/// Annotation prefix of step reports on a pod: `tektite.dev/step.<name>`.
pub const STEP_ANNOTATION_PREFIX: &str = "tektite.dev/step.";
/// Environment variable that moves `/tekton` elsewhere (the local process
/// runtime, tests); `init` creates its step links under it.
pub const ROOT_ENV: &str = "TEKTITE_TEKTON_ROOT";
/// Default largest result, in bytes, before the step fails.
pub const DEFAULT_MAX_RESULT_SIZE: usize = 64 * 1024;
/// Kubernetes' limit on a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// The marker a step writes when it ends well: `/tekton/run/<i>/out`.
pub fn out_marker(step: usize) -> String {
    format!("{RUN_DIR}/{step}/out")
}

/// The marker a step writes when it fails: `/tekton/run/<i>/out.err`.
pub fn err_marker(step: usize) -> String {
    format!("{RUN_DIR}/{step}/out.err")
}

/// Where a step's metadata (report, exit code, step results) is written:
/// `/tekton/run/<i>/status`.
pub fn metadata_dir(step: usize) -> String {
    format!("{RUN_DIR}/{step}/status")
}

/// Where a step's exit code is written: `/tekton/run/<i>/status/exitCode`.
pub fn exit_code_file(step: usize) -> String {
    format!("{}/exitCode", metadata_dir(step))
}

/// The container name of a step: `step-<name>`, or `step-unnamed-<i>`.
pub fn step_container_name(name: &str, index: usize) -> String {
    if name.is_empty() {
        format!("step-unnamed-{index}")
    } else {
        format!("step-{name}")
    }
}

/// The failure marker that goes with a marker: `<path>.err`.
pub fn err_path(marker: &str) -> String {
    format!("{marker}.err")
}

/// Parses a Go duration (`90s`, `1h30m`, `1.5s`, `-2m`, `0`), as Tekton's
/// step and run timeouts are written: the sign and the magnitude. One parser
/// for the wrapper's `-timeout` and the API's validation.
pub fn parse_go_duration(s: &str) -> Option<(bool, std::time::Duration)> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if body == "0" {
        return Some((negative, std::time::Duration::ZERO));
    }
    if body.is_empty() {
        return None;
    }
    let mut seconds = 0f64;
    let mut rest = body;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if n_end == 0 {
            return None;
        }
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        seconds += n * unit;
        rest = &rest[u_end..];
    }
    std::time::Duration::try_from_secs_f64(seconds)
        .ok()
        .map(|d| (negative, d))
}

/// The entrypoint's own exit codes, distinct from a step's usual ones.
/// A step that fails exits with the command's own code; these are used only
/// when the entrypoint itself decides.
pub mod exit {
    /// Bad flags or arguments.
    pub const USAGE: i32 = 240;
    /// The command could not be started (not found, not executable).
    pub const CANNOT_EXEC: i32 = 241;
    /// A signal arrived while waiting for the previous step.
    pub const WAIT_INTERRUPTED: i32 = 242;
    /// A previous step failed: this step was skipped.
    pub const SKIPPED: i32 = 243;
    /// A result was larger than the limit.
    pub const RESULT_TOO_LARGE: i32 = 244;
    /// The entrypoint could not write its markers or report.
    pub const IO: i32 = 245;
    /// The step ran past its timeout and was stopped.
    pub const TIMEOUT: i32 = 246;
}

/// Why a step ended, as reported (`terminationReason` in the TaskRun).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// The command exited 0.
    Completed,
    /// The command exited non-zero (or was killed by a signal).
    Error,
    /// The command failed but `onError: continue` let the task go on.
    Continued,
    /// Not run: a previous step failed (exit code `exit::SKIPPED`), or its
    /// `when` expressions were false (exit code 0; the next steps run).
    Skipped,
    /// The step ran past its timeout.
    TimeoutExceeded,
    /// A result was larger than the limit.
    ResultTooLarge,
    /// The command could not be started.
    CannotExec,
    /// The entrypoint was signalled while waiting for its turn.
    WaitInterrupted,
}

/// Where a reported result was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ResultKind {
    /// A task result (`/tekton/results/<name>`).
    Task,
    /// A step result (`<step_metadata_dir>/results/<name>`).
    Step,
}

/// One harvested result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultValue {
    pub name: String,
    pub kind: ResultKind,
    pub value: String,
}

/// What a step reports when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The step's name (from the metadata directory, or empty).
    pub step: String,
    /// The command's exit code (the real one, also with `onError: continue`).
    pub exit_code: i32,
    pub reason: Reason,
    /// A human-readable detail (which result was too large, the signal, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339 times, UTC.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub started_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub finished_at: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ResultValue>,
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

    #[test]
    fn report_format() {
        let r = Report {
            step: "build".into(),
            exit_code: 3,
            reason: Reason::Continued,
            message: String::new(),
            started_at: "2026-11-27T10:00:00.000000Z".into(),
            finished_at: "2026-11-27T10:00:01.000000Z".into(),
            results: vec![ResultValue {
                name: "digest".into(),
                kind: ResultKind::Task,
                value: "sha256:0".into(),
            }],
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"step":"build","exitCode":3,"reason":"Continued","startedAt":"2026-11-27T10:00:00.000000Z","finishedAt":"2026-11-27T10:00:01.000000Z","results":[{"name":"digest","kind":"task","value":"sha256:0"}]}"#
        );
    }
}
