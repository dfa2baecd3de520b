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
/// that ends with it (`tektite_engine::trace::ended_attempt`), read from
/// its pod's events (`…::attempt_pulls`); `None` when nothing is to be
/// added. Only while runs are traced: a list of events that fails is a
/// warning, and the attempt has no pulls.
pub async fn with_image_pulls(
    tr: &TaskRun,
    st: &TaskRunStatus,
    ns: &str,
    ctx: &Context,
) -> Option<TaskRunStatus> {
    on(ctx)?;
    let mut out = st.clone();
    let attempt = tektite_engine::trace::ended_attempt(tr.status.as_ref(), &mut out)?;
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
    attempt.image_pulls = tektite_engine::trace::attempt_pulls(&events, attempt);
    (!attempt.image_pulls.is_empty()).then_some(out)
}
