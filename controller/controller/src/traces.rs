//! The controller's traces: when a run ends, its spans
//! (`tektite_engine::trace`, from the status just written, so that steps
//! are timed by their reports) go to the exporter task
//! (`tektite_telemetry::Traces`), which sends them without holding up a
//! reconcile. Configured by the `OTEL_*` variables and the
//! `config-defaults` keys `tracing-enabled`, `tracing-endpoint` and
//! `tracing-protocol` ([`crate::config::trace_settings`]).

use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;
use tektite_api::v1::{PipelineRun, PipelineRunStatus, TaskRun, TaskRunStatus};
use tektite_engine::status::is_done;

use crate::Context;

/// Whether runs are traced now.
fn on(ctx: &Context) -> Option<&tektite_telemetry::Traces> {
    let traced = ctx.config.read().map(|c| c.tracing).unwrap_or(false);
    ctx.traces.as_ref().filter(|_| traced)
}

/// `pr` ended with `st`: its own spans (its TaskRuns send theirs).
pub fn pipelinerun_ended(pr: &PipelineRun, st: &PipelineRunStatus, ctx: &Context) {
    if let Some(traces) = on(ctx) {
        let mut done = pr.clone();
        done.status = Some(st.clone());
        traces.send(tektite_engine::trace::pipelinerun_spans(&done));
    }
}

/// `tr` ended with `st`: its spans, its attempts' and its steps'.
pub fn taskrun_ended(tr: &TaskRun, st: &TaskRunStatus, ctx: &Context) {
    if let Some(traces) = on(ctx) {
        let mut done = tr.clone();
        done.status = Some(st.clone());
        traces.send(tektite_engine::trace::taskrun_spans(&done));
    }
}

/// `st` (planned over `tr`'s status) with the image pulls of the attempt
/// that ends with it (the TaskRun ends, or a retry moves the attempt into
/// `retriesStatus`), from its pod's `Pulling`/`Pulled` events
/// (`tektite_engine::trace::pulls_from_events`); `None` when nothing is
/// to be added. Only while runs are traced: a list of events that fails is
/// a warning, and the attempt has no pulls.
pub async fn with_image_pulls(
    tr: &TaskRun,
    st: &TaskRunStatus,
    ns: &str,
    ctx: &Context,
) -> Option<TaskRunStatus> {
    on(ctx)?;
    let before = tr.status.as_ref();
    let retried = st.retries_status.len() > before.map_or(0, |s| s.retries_status.len());
    let ended_now = is_done(&st.conditions) && !before.is_some_and(|s| is_done(&s.conditions));
    let mut out = st.clone();
    let attempt = if retried {
        out.retries_status.last_mut()?
    } else if ended_now {
        &mut out
    } else {
        return None;
    };
    if !attempt.image_pulls.is_empty() {
        return None;
    }
    let pod = attempt.pod_name.clone()?;
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), ns);
    // From the API server's cache (resourceVersion 0), not a read of etcd.
    let params = ListParams::default()
        .fields(&format!(
            "involvedObject.kind=Pod,involvedObject.name={pod}"
        ))
        .match_any();
    let events = match api.list(&params).await {
        Ok(list) => list.items,
        Err(error) => {
            tracing::warn!(%error, pod, "cannot list the pod's events: its image pulls are left out of its trace");
            return None;
        }
    };
    // Only this pod's, not an earlier pod's of the same name (a TaskRun
    // deleted and made again): none from before the attempt began.
    let began = attempt.start_time.as_ref().map(|t| t.0);
    let mine: Vec<Event> = events
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod.as_str()))
        .filter(|e| e.involved_object.kind.as_deref().is_none_or(|k| k == "Pod"))
        .collect();
    let recent = |p: &tektite_api::v1::ImagePull| {
        let ended = p.completion_time.as_ref().map(|t| t.0);
        match (began, ended) {
            // Event times are kept to the second.
            (Some(b), Some(e)) => e.as_second() >= b.as_second(),
            _ => true,
        }
    };
    attempt.image_pulls = tektite_engine::trace::pulls_from_events(&mine)
        .into_iter()
        .filter(recent)
        .collect();
    (!attempt.image_pulls.is_empty()).then_some(out)
}
