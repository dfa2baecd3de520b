//! What a pod says about its steps, checked before the engine reads it.
//!
//! Steps report through annotations on their own pod (`tektite.dev/step.<container>`),
//! patched with the pod's service-account token. Every container of the pod
//! holds that token, so an annotation may have been written by another
//! container than the step it names; the admission policy lets each report
//! be written once, but whoever writes first wins. The kubelet's view of a
//! container (its terminated state) is written by no container, so a report
//! is only believed where it agrees with it:
//!
//! - its exit code must be the one the entrypoint exits with for such a
//!   report ([`container_exit`]): the command's code for `Error`, 0 for
//!   `Completed` and `Continued`, the entrypoint's own code otherwise;
//! - each of its results must be within the limit the step's entrypoint was
//!   given (`-max_result_size`, else the default), as the entrypoint itself
//!   enforces on what it harvests.
//!
//! A report that fails a check is dropped with its results: the step's
//! termination message (written by the step's own entrypoint only) is used
//! if it passes the same checks, else a report made from the kubelet's state
//! that says why. A result over the limit fails the step as the entrypoint
//! would have (`ResultTooLarge`, exit code 244). The controller-owned
//! `tektite.dev/sidecars-stopped` is believed only on a pod whose sidecars
//! the controller did stop (a sidecar runs the entrypoint image).
//!
//! Pure: the pod is changed in memory, never written back.

use std::fmt;

use k8s_openapi::api::core::v1::{Container, ContainerStateTerminated, ContainerStatus, Pod};
use tektite_engine::pod::Config;
use tektite_engine::status::parse_termination_message;
use tektite_engine::taskrun::SIDECARS_STOPPED;
use tektite_entrypoint::contract::{
    DEFAULT_MAX_RESULT_SIZE, Reason, Report, STEP_ANNOTATION_PREFIX, exit,
};

/// Why a step's report was not believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The report's exit code is not the one its container ended with.
    ExitCode {
        reason: Reason,
        reported: i32,
        container: i32,
    },
    /// A result is larger than the step's limit.
    TooLarge {
        result: String,
        size: usize,
        limit: usize,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::ExitCode {
                reason,
                reported,
                container,
            } => write!(
                f,
                "the step's report ({reason:?}, exit code {reported}) does not agree with its \
                 container's exit code {container}: the report and its results are ignored"
            ),
            Problem::TooLarge {
                result,
                size,
                limit,
            } => write!(
                f,
                "the step's result {result:?} is {size} bytes, over the limit of {limit} bytes: \
                 the report and its results are ignored"
            ),
        }
    }
}

/// A step whose report was not believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The step's container.
    pub container: String,
    pub problem: Problem,
}

/// Checks every ended step's report of `pod` (see the module's docs) and
/// replaces those that fail; returns the steps whose reports were dropped.
pub fn vet(pod: &mut Pod, config: &Config) -> Vec<Rejected> {
    let steps: Vec<(String, usize)> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter(|c| c.name.starts_with("step-"))
        .map(|c| (c.name.clone(), result_limit(c)))
        .collect();
    let mut rejected = Vec::new();
    for (container, limit) in steps {
        let Some(term) = status_of(pod, &container).and_then(terminated).cloned() else {
            continue;
        };
        if let Some(problem) = vet_step(pod, &container, &term, limit) {
            rejected.push(Rejected { container, problem });
        }
    }
    vet_sidecars_stopped(pod, config);
    rejected
}

/// The exit code the entrypoint's process ends with after writing `r`.
pub fn container_exit(r: &Report) -> i32 {
    match r.reason {
        Reason::Completed | Reason::Continued => 0,
        Reason::Error => r.exit_code,
        Reason::Skipped => exit::SKIPPED,
        Reason::WaitInterrupted => exit::WAIT_INTERRUPTED,
        Reason::CannotExec => exit::CANNOT_EXEC,
        Reason::TimeoutExceeded => exit::TIMEOUT,
        Reason::ResultTooLarge => exit::RESULT_TOO_LARGE,
    }
}

/// What is wrong with `r` as the report of a container that ended `term`
/// with results limited to `limit` bytes, if anything.
pub fn problem(r: &Report, term: &ContainerStateTerminated, limit: usize) -> Option<Problem> {
    // Exit statuses are 8 bits: the kubelet sees the low byte.
    if container_exit(r) & 0xff != term.exit_code {
        return Some(Problem::ExitCode {
            reason: r.reason,
            reported: r.exit_code,
            container: term.exit_code,
        });
    }
    r.results
        .iter()
        .find(|v| v.value.len() > limit)
        .map(|v| Problem::TooLarge {
            result: v.name.clone(),
            size: v.value.len(),
            limit,
        })
}

/// The largest result the step's entrypoint was told to accept: its
/// `-max_result_size` flag (among the flags before `-entrypoint`), else
/// the entrypoint's default.
fn result_limit(c: &Container) -> usize {
    let args = c.args.as_deref().unwrap_or_default();
    let flags = args
        .iter()
        .position(|a| a == "-entrypoint")
        .map_or(args, |end| &args[..end]);
    flags
        .windows(2)
        .find(|w| w[0] == "-max_result_size")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(DEFAULT_MAX_RESULT_SIZE)
}

/// Checks one ended step: its annotation, then its termination message (the
/// engine's two sources, in its order). Leaves the first one that passes
/// for the engine to read; when none does, puts a report made from the
/// kubelet's state in their place.
fn vet_step(
    pod: &mut Pod,
    container: &str,
    term: &ContainerStateTerminated,
    limit: usize,
) -> Option<Problem> {
    let key = format!("{STEP_ANNOTATION_PREFIX}{container}");
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&key))
        .and_then(|v| serde_json::from_str::<Report>(v).ok());
    let mut found = None;
    if let Some(r) = annotated {
        // Believed: the engine reads it as it is.
        let p = problem(&r, term, limit)?;
        found = Some(p);
        set_annotation(pod, &key, None);
    }
    if let Some(r) = term.message.as_deref().and_then(parse_termination_message) {
        match problem(&r, term, limit) {
            // The step's own entrypoint wrote it: the engine reads it now.
            None => return found,
            Some(p) => {
                found.get_or_insert(p);
            }
        }
    }
    let p = found?;
    let replacement = from_kubelet(container, term, &p);
    if let Some(cs) = status_of_mut(pod, container)
        .and_then(|cs| cs.state.as_mut())
        .and_then(|s| s.terminated.as_mut())
    {
        cs.exit_code = container_exit(&replacement);
        if replacement.reason == Reason::ResultTooLarge {
            cs.reason = Some("ResultTooLarge".into());
        }
    }
    set_annotation(pod, &key, serde_json::to_string(&replacement).ok());
    Some(p)
}

/// The report of a step whose own could not be believed: the kubelet's exit
/// code and times, no results, and the problem as its message. A result
/// over the limit fails the step as the entrypoint would have.
fn from_kubelet(container: &str, term: &ContainerStateTerminated, p: &Problem) -> Report {
    let (reason, exit_code) = match (p, term.exit_code) {
        (Problem::TooLarge { .. }, 0) => (Reason::ResultTooLarge, exit::RESULT_TOO_LARGE),
        (_, 0) => (Reason::Completed, 0),
        (_, code) => (Reason::Error, code),
    };
    let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| t.0.to_string()).unwrap_or_default()
    };
    Report {
        step: container.to_string(),
        exit_code,
        reason,
        message: p.to_string(),
        started_at: time(term.started_at.as_ref()),
        finished_at: time(term.finished_at.as_ref()),
        results: Vec::new(),
    }
}

/// Drops `tektite.dev/sidecars-stopped` from a pod none of whose sidecars
/// runs the entrypoint image (what the controller's stop swaps in): the
/// annotation did not come from the controller, and must not hide a
/// failed sidecar.
fn vet_sidecars_stopped(pod: &mut Pod, config: &Config) {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(SIDECARS_STOPPED));
    if !annotated {
        return;
    }
    let spec = pod.spec.as_ref();
    let entrypoint_images: Vec<&str> = std::iter::once(config.entrypoint_image.as_str())
        .chain(
            spec.and_then(|s| s.init_containers.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| c.image.as_deref()),
        )
        .collect();
    let stopped = spec
        .into_iter()
        .flat_map(|s| &s.containers)
        .filter(|c| c.name.starts_with("sidecar-"))
        .any(|c| {
            c.image
                .as_deref()
                .is_some_and(|i| entrypoint_images.contains(&i))
        });
    if !stopped {
        tracing::warn!(
            pod = pod.metadata.name.as_deref().unwrap_or(""),
            "sidecars-stopped annotation on a pod whose sidecars were not stopped: ignored"
        );
        set_annotation(pod, SIDECARS_STOPPED, None);
    }
}

fn terminated(cs: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    cs.state.as_ref()?.terminated.as_ref()
}

fn status_of<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)
}

fn status_of_mut<'a>(pod: &'a mut Pod, container: &str) -> Option<&'a mut ContainerStatus> {
    pod.status
        .as_mut()?
        .container_statuses
        .as_mut()?
        .iter_mut()
        .find(|c| c.name == container)
}

/// Sets (`Some`) or removes (`None`) one annotation of the pod in memory.
fn set_annotation(pod: &mut Pod, key: &str, value: Option<String>) {
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    match value {
        Some(v) => {
            annotations.insert(key.to_string(), v);
        }
        None => {
            annotations.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tektite_entrypoint::contract::{ResultKind, ResultValue};

    fn report(reason: Reason, exit_code: i32, value: &str) -> Report {
        Report {
            step: "step-a".into(),
            exit_code,
            reason,
            message: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
            results: vec![ResultValue {
                name: "r".into(),
                kind: ResultKind::Task,
                value: value.into(),
            }],
        }
    }

    fn ended(exit_code: i32) -> ContainerStateTerminated {
        ContainerStateTerminated {
            exit_code,
            ..Default::default()
        }
    }

    #[test]
    fn honest_reports_agree_with_their_containers() {
        for (r, code) in [
            (report(Reason::Completed, 0, "x"), 0),
            (report(Reason::Continued, 3, "x"), 0),
            (report(Reason::Error, 3, "x"), 3),
            (report(Reason::TimeoutExceeded, 143, "x"), exit::TIMEOUT),
            (
                report(Reason::ResultTooLarge, 0, "x"),
                exit::RESULT_TOO_LARGE,
            ),
            (report(Reason::Skipped, exit::SKIPPED, ""), exit::SKIPPED),
        ] {
            assert_eq!(problem(&r, &ended(code), 10), None, "{r:?}");
        }
        let forged = report(Reason::Completed, 0, "x");
        assert_eq!(
            problem(&forged, &ended(1), 10),
            Some(Problem::ExitCode {
                reason: Reason::Completed,
                reported: 0,
                container: 1
            })
        );
        assert!(matches!(
            problem(&report(Reason::Completed, 0, "0123456789a"), &ended(0), 10),
            Some(Problem::TooLarge {
                size: 11,
                limit: 10,
                ..
            })
        ));
    }

    #[test]
    fn the_limit_is_the_steps_own_flag() {
        let c: Container = serde_json::from_value(json!({"name": "step-a", "args": [
            "-max_result_size", "100", "-entrypoint", "echo", "--", "-max_result_size", "1"]}))
        .unwrap();
        assert_eq!(result_limit(&c), 100);
        let c: Container = serde_json::from_value(json!({"name": "step-a", "args": [
            "-entrypoint", "echo", "--", "-max_result_size", "1"]}))
        .unwrap();
        assert_eq!(result_limit(&c), DEFAULT_MAX_RESULT_SIZE);
    }
}
