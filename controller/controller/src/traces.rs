//! The controller's traces: when a run ends, its spans
//! (`tektite_engine::trace`, from the status just written, so that steps
//! are timed by their reports) go to the exporter task
//! (`tektite_telemetry::Traces`), which sends them without holding up a
//! reconcile. Configured by the `OTEL_*` variables and the
//! `config-defaults` keys `tracing-enabled`, `tracing-endpoint` and
//! `tracing-protocol` ([`crate::config::trace_settings`]).

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
