//! Command-line flags, in the form Tekton's entrypoint takes them
//! (`-wait_file a,b -post_file p -- cmd args…`; `-flag=value` works too).

use std::time::Duration;

use crate::contract::{DEFAULT_MAX_RESULT_SIZE, RESULTS_DIR, TERMINATION_PATH};

/// `onError` of the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Fail the step and skip the following ones (Tekton's default).
    #[default]
    StopAndFail,
    /// Record the failure, exit 0, let the following steps run.
    Continue,
}

/// Everything the wrapper was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    /// Files to wait for (all of them) before running.
    pub wait_files: Vec<String>,
    /// Wait until the wait files are non-empty, not only present.
    pub wait_file_content: bool,
    /// Written when the step ends well; `<post_file>.err` when it fails.
    pub post_file: Option<String>,
    /// Termination-message file (the report when the pod cannot be patched).
    pub termination_path: String,
    /// Task results to harvest from `results_dir`.
    pub results: Vec<String>,
    /// Step results to harvest from `<step_metadata_dir>/results`.
    pub step_results: Vec<String>,
    /// Where the report, exit code and step results live.
    pub step_metadata_dir: Option<String>,
    /// Stop the command after this long.
    pub timeout: Option<Duration>,
    pub on_error: OnError,
    /// Copy the command's stdout / stderr to these files too.
    pub stdout_path: Option<String>,
    pub stderr_path: Option<String>,
    /// Tektite: where task results are read (`/tekton/results`).
    pub results_dir: String,
    /// Tektite: the largest result, in bytes, before the step fails.
    pub max_result_size: usize,
    /// Tektite: time between SIGTERM and SIGKILL when a step is stopped.
    pub grace_period: Duration,
    /// `-when_expressions` (JSON, read when the step's turn comes): the
    /// step runs only when they all hold.
    pub when: String,
    /// The command and its arguments (`-entrypoint` first, then after `--`).
    pub command: Vec<String>,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            wait_files: Vec::new(),
            wait_file_content: false,
            post_file: None,
            termination_path: TERMINATION_PATH.to_string(),
            results: Vec::new(),
            step_results: Vec::new(),
            step_metadata_dir: None,
            timeout: None,
            on_error: OnError::StopAndFail,
            stdout_path: None,
            stderr_path: None,
            results_dir: RESULTS_DIR.to_string(),
            max_result_size: DEFAULT_MAX_RESULT_SIZE,
            grace_period: Duration::from_secs(2),
            when: String::new(),
            command: Vec::new(),
        }
    }
}

/// Tekton flags accepted for compatibility and not used by Tektite.
const IGNORED_WITH_VALUE: &[&str] = &["result_from"];
const IGNORED_BOOL: &[&str] = &[
    "breakpoint_on_failure",
    "debug_before_step",
    "compress_termination_message",
];

/// Splits a comma list, dropping empty items.
fn list(v: &str) -> Vec<String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses a Go duration (`90s`, `1h30m`, `1.5s`, `0`).
///
/// # Errors
/// A message naming the value.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match crate::contract::parse_go_duration(s) {
        Some((false, d)) => Ok(d),
        _ => Err(format!(
            "{s:?} is not a duration (expected e.g. 90s, 10m, 1h30m)"
        )),
    }
}

/// Parses the arguments after the program name.
///
/// # Errors
/// A message for the user, for an unknown flag, a missing value or a bad one.
pub fn parse(args: &[String]) -> Result<Flags, String> {
    let mut f = Flags::default();
    let mut entrypoint: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            f.command.extend(args[i + 1..].iter().cloned());
            break;
        }
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|b| !b.is_empty())
        else {
            // Go's flag package stops at the first non-flag argument.
            f.command.extend(args[i..].iter().cloned());
            break;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let is_bool = matches!(name, "wait_file_content") || IGNORED_BOOL.contains(&name);
        let value = if is_bool {
            inline.unwrap_or_else(|| "true".into())
        } else if let Some(v) = inline {
            v
        } else {
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("flag -{name} needs a value"))?
        };
        let boolean = || match value.as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(format!("flag -{name}: {value:?} is not true or false")),
        };
        match name {
            "entrypoint" => entrypoint = Some(value),
            "wait_file" => f.wait_files = list(&value),
            "wait_file_content" => f.wait_file_content = boolean()?,
            "post_file" => f.post_file = Some(value).filter(|v| !v.is_empty()),
            "termination_path" => f.termination_path = value,
            "results" => f.results = list(&value),
            "step_results" => f.step_results = list(&value),
            "step_metadata_dir" => f.step_metadata_dir = Some(value).filter(|v| !v.is_empty()),
            "timeout" => {
                let d = parse_duration(&value).map_err(|e| format!("flag -timeout: {e}"))?;
                f.timeout = (!d.is_zero()).then_some(d);
            }
            "on_error" => {
                f.on_error = match value.as_str() {
                    "" | "stopAndFail" => OnError::StopAndFail,
                    "continue" => OnError::Continue,
                    other => {
                        return Err(format!(
                            "flag -on_error: {other:?} is not continue or stopAndFail"
                        ));
                    }
                }
            }
            "when_expressions" => f.when = value,
            "stdout_path" => f.stdout_path = Some(value).filter(|v| !v.is_empty()),
            "stderr_path" => f.stderr_path = Some(value).filter(|v| !v.is_empty()),
            "results_dir" => f.results_dir = value,
            "max_result_size" => {
                f.max_result_size = value.parse().map_err(|_| {
                    format!("flag -max_result_size: {value:?} is not a number of bytes")
                })?;
            }
            "grace_period" => {
                f.grace_period =
                    parse_duration(&value).map_err(|e| format!("flag -grace_period: {e}"))?
            }
            n if IGNORED_WITH_VALUE.contains(&n) || IGNORED_BOOL.contains(&n) => {}
            other => return Err(format!("unknown flag -{other}")),
        }
        i += 1;
    }
    if let Some(ep) = entrypoint {
        f.command.insert(0, ep);
    }
    if f.command.is_empty() {
        return Err("no command given: pass it after --, or with -entrypoint".into());
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn tekton_style_flags() {
        let f = parse(&args(&[
            "-wait_file",
            "/tekton/run/0/out,/tekton/downward/ready",
            "-post_file=/tekton/run/1/out",
            "-wait_file_content",
            "-termination_path",
            "/tekton/termination",
            "-results",
            "a,b",
            "-step_metadata_dir",
            "/tekton/run/1/status",
            "-timeout",
            "1m30s",
            "-on_error",
            "continue",
            "-entrypoint",
            "/bin/sh",
            "--",
            "-c",
            "echo hi",
        ]))
        .unwrap();
        assert_eq!(
            f.wait_files,
            ["/tekton/run/0/out", "/tekton/downward/ready"]
        );
        assert_eq!(f.post_file.as_deref(), Some("/tekton/run/1/out"));
        assert!(f.wait_file_content);
        assert_eq!(f.results, ["a", "b"]);
        assert_eq!(f.timeout, Some(Duration::from_secs(90)));
        assert_eq!(f.on_error, OnError::Continue);
        assert_eq!(f.command, ["/bin/sh", "-c", "echo hi"]);
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            parse(&args(&["-bogus", "x", "--", "true"])).unwrap_err(),
            "unknown flag -bogus"
        );
        assert_eq!(
            parse(&args(&["-post_file"])).unwrap_err(),
            "flag -post_file needs a value"
        );
        assert!(
            parse(&args(&["-timeout", "soon", "--", "true"]))
                .unwrap_err()
                .contains("\"soon\" is not a duration")
        );
        assert!(
            parse(&args(&["-on_error", "ignore", "--", "true"]))
                .unwrap_err()
                .contains("not continue or stopAndFail")
        );
        assert!(
            parse(&args(&["-post_file", "x"]))
                .unwrap_err()
                .contains("no command")
        );
        // Tekton flags Tektite does not use are accepted.
        assert!(
            parse(&args(&[
                "-breakpoint_on_failure",
                "-result_from",
                "termination-message",
                "--",
                "true"
            ]))
            .is_ok()
        );
    }
}
