//! What a pod's annotations say about its steps, sorted before the engine
//! reads them.
//!
//! Steps report through annotations on their own pod (`tektite.dev/step.<container>`),
//! patched with the pod's service-account token. Every container of the pod
//! holds that token, so an annotation may have been written by another
//! container than the step it names; the admission policy lets each report
//! be written once, and then whoever writes first wins. The engine uses a
//! report only where it agrees with the kubelet's state of its container
//! (`tektite_engine::status::report_problem`: exit code, result sizes), but
//! it reads the annotation first and the termination message only when
//! there is no annotation. Here, an annotation the engine would not use is
//! dropped from the controller's view of a pod whose step left a
//! termination message, so the engine reads that instead: the step's own
//! entrypoint writes it when its PATCH is refused (a report was written
//! already), and no other container can write it. The engine checks it the
//! same way. Without a termination message the annotation stays, for the
//! engine to refuse with its reason.
//!
//! The controller-owned `tektite.dev/sidecars-stopped` is believed only on
//! a pod whose sidecars the controller did stop (a sidecar runs the
//! entrypoint image), so that it cannot hide a failed sidecar.
//!
//! Pure: the pod is changed in memory, never written back.

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use tektite_engine::pod::Config;
use tektite_engine::status::{StepFlags, report_problem};
use tektite_engine::taskrun::SIDECARS_STOPPED;
use tektite_entrypoint::contract::{Report, STEP_ANNOTATION_PREFIX};

/// A step report annotation left out of the controller's view of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The step's container.
    pub container: String,
    /// Why (the engine's words).
    pub problem: String,
}

/// Drops from `pod` the step report annotations the engine would not use
/// where the step left a termination message, and a `sidecars-stopped`
/// annotation the controller did not write (see the module's docs);
/// returns the reports dropped.
pub fn vet(pod: &mut Pod, config: &Config) -> Vec<Rejected> {
    let steps: Vec<(String, StepFlags)> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter(|c| c.name.starts_with("step-"))
        .map(|c| (c.name.clone(), StepFlags::of(c)))
        .collect();
    let mut rejected = Vec::new();
    for (container, flags) in steps {
        let Some(term) = status_of(pod, &container).and_then(terminated) else {
            continue;
        };
        if term.message.as_deref().is_none_or(str::is_empty) {
            continue;
        }
        let key = format!("{STEP_ANNOTATION_PREFIX}{container}");
        let problem = annotation(pod, &key)
            .and_then(|v| serde_json::from_str::<Report>(v).ok())
            .and_then(|r| report_problem(&r, term.exit_code, flags));
        if let Some(problem) = problem {
            remove_annotation(pod, &key);
            rejected.push(Rejected { container, problem });
        }
    }
    vet_sidecars_stopped(pod, config);
    rejected
}

/// Drops `tektite.dev/sidecars-stopped` from a pod none of whose sidecars
/// runs the entrypoint image (what the controller's stop swaps in): the
/// annotation did not come from the controller, and must not hide a
/// failed sidecar.
fn vet_sidecars_stopped(pod: &mut Pod, config: &Config) {
    if annotation(pod, SIDECARS_STOPPED).is_none() {
        return;
    }
    let spec = pod.spec.as_ref();
    // The configured image, or the one the pod was made with (the
    // configuration may have changed since).
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
            "sidecars-stopped on a pod whose sidecars were not stopped: ignored"
        );
        remove_annotation(pod, SIDECARS_STOPPED);
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

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a String> {
    pod.metadata.annotations.as_ref()?.get(key)
}

fn remove_annotation(pod: &mut Pod, key: &str) {
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(exit_code: i32, report: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": {"tektite.dev/step.step-a": report.to_string()}},
            "spec": {"containers": [{"name": "step-a", "args": ["-max_result_size", "4", "-entrypoint", "x"]}]},
            "status": {"containerStatuses": [{"name": "step-a", "image": "", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": exit_code, "message": "[]"}}}]}}))
        .unwrap()
    }

    fn report(reason: &str, exit_code: i32, value: &str) -> serde_json::Value {
        json!({"step": "step-a", "exitCode": exit_code, "reason": reason,
               "results": [{"name": "r", "kind": "task", "value": value}]})
    }

    #[test]
    fn only_reports_that_agree_with_their_containers_are_kept() {
        let config = Config::default();
        for (mut p, kept) in [
            (pod(0, report("Completed", 0, "ok")), true),
            // The step has no `-on_error continue`.
            (pod(0, report("Continued", 3, "ok")), false),
            (pod(3, report("Error", 3, "ok")), true),
            (pod(1, report("Completed", 0, "ok")), false),
            (pod(0, report("Error", 3, "ok")), false),
            (pod(0, report("Completed", 0, "large")), false),
        ] {
            let rejected = vet(&mut p, &config);
            let left = annotation(&p, "tektite.dev/step.step-a").is_some();
            assert_eq!((left, rejected.is_empty()), (kept, kept), "{p:?}");
        }
    }
}
