//! What the controller believes of a pod's annotations before the engine
//! reads them. Step reports are the engine's to judge
//! (`tektite_engine::status`: each is checked against the kubelet's state
//! of its container, and the step's own termination message stands in for
//! an annotation that does not agree). The controller-owned
//! `tektite.dev/sidecars-stopped` is believed only on a pod whose sidecars
//! the controller did stop (a sidecar runs the entrypoint image), so that
//! a step, which can write annotations on its pod, cannot hide a failed
//! sidecar with it.
//!
//! Pure: the pod is changed in memory, never written back.

use k8s_openapi::api::core::v1::Pod;
use tektite_engine::pod::Config;
use tektite_engine::status::SIDECARS_STOPPED;

/// Drops `tektite.dev/sidecars-stopped` from a pod none of whose sidecars
/// runs the entrypoint image (what the controller's stop swaps in): the
/// annotation did not come from the controller, and must not hide a
/// failed sidecar.
pub fn vet(pod: &mut Pod, config: &Config) {
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

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a String> {
    pod.metadata.annotations.as_ref()?.get(key)
}

fn remove_annotation(pod: &mut Pod, key: &str) {
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove(key);
    }
}
