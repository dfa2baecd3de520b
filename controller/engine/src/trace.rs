//! Traces of runs (pure): the spans of a PipelineRun and of a TaskRun,
//! computed from their records once they have ended, and the W3C trace
//! context that ties them together.
//!
//! Every id is derived from what the run records (its uid, namespace and
//! name, and an incoming trace context), never drawn at random, so that
//! whoever computes a run's spans (the controller after a restart, `tkt`
//! at the end of a local run, the pod builder that gives a step its
//! `TRACEPARENT`) finds the same ids without storing them:
//!
//! - a PipelineRun's trace is the one of its incoming context, the
//!   annotation `traceparent` (from a webhook sender) or Tekton's
//!   `tekton.dev/pipelinerunSpanContext` (`{"traceparent": …}`), whose
//!   span becomes its parent; else a new trace, its id derived from the
//!   run's uid;
//! - a TaskRun a pipeline made carries its PipelineRun's span context in
//!   the annotation `tekton.dev/taskrunSpanContext` (as Tekton's do), so
//!   its span is a child of the PipelineRun's; a standalone one is read
//!   like a PipelineRun (`traceparent`, else a trace of its own);
//! - a step's environment has `TRACEPARENT` set to its TaskRun's span, so
//!   a test that uses OpenTelemetry joins the pipeline's trace.
//!
//! The spans: the PipelineRun (from its creation to its completion), with
//! `queued` while a concurrency limit held it (a second or more); each TaskRun, with `pod
//! pending` (from the attempt's start to its first step's start: the pod's
//! scheduling, image pulls and init containers), one span per step timed
//! by the step's own report (its start and end, as the entrypoint saw
//! them), and one `attempt N` span per failed attempt before a retry, with
//! that attempt's own waiting and steps.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
pub use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};
use tektite_api::v1::{Condition, ImagePull, PipelineRun, StepState, TaskRun, TaskRunStatus};

/// The annotation of an incoming W3C trace context (a webhook sender's).
pub const TRACEPARENT_ANNOTATION: &str = "traceparent";
/// Tekton's carrier of a PipelineRun's parent context (JSON).
pub const PIPELINERUN_SPAN_CONTEXT: &str = "tekton.dev/pipelinerunSpanContext";
/// Tekton's carrier of a TaskRun's parent context (JSON): a pipeline's
/// TaskRuns carry their PipelineRun's span context in it.
pub const TASKRUN_SPAN_CONTEXT: &str = "tekton.dev/taskrunSpanContext";
/// The step variable with the TaskRun span's context.
pub const TRACEPARENT_ENV: &str = "TRACEPARENT";

/// Whether an annotation carries a run's trace context (its own, not to
/// be copied onto the TaskRuns a PipelineRun makes).
pub fn is_context(key: &str) -> bool {
    matches!(
        key,
        TRACEPARENT_ANNOTATION | PIPELINERUN_SPAN_CONTEXT | TASKRUN_SPAN_CONTEXT
    )
}

/// A W3C trace context: a trace, a span in it, and whether it is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl SpanContext {
    /// Parses a `traceparent` header (version `00`, or a later version's
    /// first four fields); `None` when it is not one, or its ids are zero.
    pub fn parse(header: &str) -> Option<SpanContext> {
        let header = header.trim();
        let mut parts = header.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let later = u8::from_str_radix(version, 16).ok()?;
        if version.len() != 2 || later == 0xff || (later == 0 && parts.next().is_some()) {
            return None;
        }
        let trace_id: [u8; 16] = hex(trace)?;
        let span_id: [u8; 8] = hex(span)?;
        let [flags]: [u8; 1] = hex(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(SpanContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The `traceparent` header of this context.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            to_hex(&self.trace_id),
            to_hex(&self.span_id),
            u8::from(self.sampled)
        )
    }

    /// Tekton's JSON carrier of this context.
    pub fn carrier(&self) -> String {
        serde_json::json!({ "traceparent": self.traceparent() }).to_string()
    }
}

/// Lowercase hex of exactly `N` bytes.
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first `N` bytes of a hash of `parts` (never all zero).
fn derive<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let mut out = [0; N];
    out.copy_from_slice(&digest[..N]);
    if out == [0; N] {
        out[N - 1] = 1;
    }
    out
}

/// A run's incoming context: Tekton's JSON carrier under `carrier_key`
/// (for a pipeline's TaskRun, its PipelineRun's span, which wins over
/// whatever else it was given), else the `traceparent` annotation.
fn incoming(meta: &ObjectMeta, carrier_key: &str) -> Option<SpanContext> {
    let annotations = meta.annotations.as_ref()?;
    let carried = || {
        let carrier: BTreeMap<String, String> =
            serde_json::from_str(annotations.get(carrier_key)?).ok()?;
        SpanContext::parse(carrier.get("traceparent")?)
    };
    carried().or_else(|| SpanContext::parse(annotations.get(TRACEPARENT_ANNOTATION)?))
}

/// A run's parent context (if any) and its own span's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunContext {
    pub parent: Option<SpanContext>,
    pub own: SpanContext,
}

fn run_context(kind: &str, meta: &ObjectMeta, carrier_key: &str) -> RunContext {
    let parent = incoming(meta, carrier_key);
    let key = run_key(meta);
    let trace_id = parent.map_or_else(
        || derive(&[b"trace", kind.as_bytes(), key.as_bytes()]),
        |p| p.trace_id,
    );
    // The parent's span too: a TaskRun of `tkt` has no uid of its own,
    // and its name may come again under another run.
    let parent_span = parent.map(|p| p.span_id).unwrap_or_default();
    RunContext {
        parent,
        own: SpanContext {
            trace_id,
            span_id: derive(&[
                b"span",
                &trace_id,
                &parent_span,
                kind.as_bytes(),
                key.as_bytes(),
            ]),
            sampled: parent.is_none_or(|p| p.sampled),
        },
    }
}

/// What tells one run from every other: its uid, namespace, name and
/// creation.
fn run_key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}/{}/{}",
        meta.uid.as_deref().unwrap_or_default(),
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
        meta.creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or_default()
    )
}

/// A PipelineRun's trace context.
pub fn pipelinerun_context(pr: &PipelineRun) -> RunContext {
    run_context("PipelineRun", &pr.metadata, PIPELINERUN_SPAN_CONTEXT)
}

/// A TaskRun's trace context (a pipeline's TaskRun: under its
/// PipelineRun's span).
pub fn taskrun_context(tr: &TaskRun) -> RunContext {
    run_context("TaskRun", &tr.metadata, TASKRUN_SPAN_CONTEXT)
}

/// The images a kubelet pulled for a pod, from its events (`events`: the
/// pod's): each `Pulled` event that says `Successfully pulled image "X" in
/// D …` is a pull of `X` that ended at the event's time and took `D` (else
/// it began at the `Pulling image "X"` event's time). `Pulled` events
/// that say the image was already present are not pulls.
pub fn pulls_from_events(events: &[k8s_openapi::api::core::v1::Event]) -> Vec<ImagePull> {
    let of_reason = |reason: &'static str| {
        events
            .iter()
            .filter(move |e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| Some((e.message.as_deref()?, event_time(e)?)))
    };
    let mut pulls: Vec<ImagePull> = Vec::new();
    for (message, end) in of_reason("Pulled") {
        let Some((image, tail)) = quoted_after(message, "Successfully pulled image ") else {
            continue;
        };
        let took = tail
            .trim_start()
            .strip_prefix("in ")
            .and_then(|t| t.split_whitespace().next())
            .and_then(tektite_entrypoint::contract::parse_go_duration)
            .filter(|(negative, _)| !negative)
            .and_then(|(_, d)| k8s_openapi::jiff::SignedDuration::try_from(d).ok());
        let pulling = of_reason("Pulling")
            .filter(|(m, t)| {
                *t <= end && quoted_after(m, "Pulling image ").is_some_and(|(i, _)| i == image)
            })
            .map(|(_, t)| t)
            .max();
        let start = took
            .and_then(|d| end.checked_sub(d).ok())
            .or(pulling)
            .unwrap_or(end);
        pulls.push(ImagePull {
            image: image.to_string(),
            start_time: Some(Time(start)),
            completion_time: Some(Time(end)),
        });
    }
    pulls.sort_by_key(|p| p.start_time.as_ref().map(|t| t.0));
    pulls
}

/// The attempt of `after` (a TaskRun's status as planned over `before`)
/// that ends with it and has no image pulls recorded yet: the one a retry
/// just moved into `retriesStatus`, or the run's own when it just ended.
pub fn ended_attempt<'a>(
    before: Option<&TaskRunStatus>,
    after: &'a mut TaskRunStatus,
) -> Option<&'a mut TaskRunStatus> {
    let done = |s: &TaskRunStatus| crate::status::is_done(&s.conditions);
    let retried = after.retries_status.len() > before.map_or(0, |s| s.retries_status.len());
    let ended_now = done(after) && !before.is_some_and(done);
    let attempt = if retried {
        after.retries_status.last_mut()?
    } else if ended_now {
        after
    } else {
        return None;
    };
    attempt.image_pulls.is_empty().then_some(attempt)
}

/// The images pulled for `attempt`'s pod, from `events`
/// ([`pulls_from_events`] over those of that pod): an earlier pod's of the
/// same name (a TaskRun deleted and made again) left out, by their times,
/// none ending before the attempt began (to the second, as events keep
/// them).
pub fn attempt_pulls(
    events: &[k8s_openapi::api::core::v1::Event],
    attempt: &TaskRunStatus,
) -> Vec<ImagePull> {
    let Some(pod) = attempt.pod_name.as_deref() else {
        return Vec::new();
    };
    let mine: Vec<k8s_openapi::api::core::v1::Event> = events
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod))
        .filter(|e| e.involved_object.kind.as_deref().is_none_or(|k| k == "Pod"))
        .cloned()
        .collect();
    let began = time(attempt.start_time.as_ref()).map(|t| t.as_second());
    pulls_from_events(&mine)
        .into_iter()
        .filter(|p| {
            let ended = time(p.completion_time.as_ref()).map(|t| t.as_second());
            began.zip(ended).is_none_or(|(b, e)| e >= b)
        })
        .collect()
}

/// When an event happened: its `eventTime`, else its last or first time.
fn event_time(e: &k8s_openapi::api::core::v1::Event) -> Option<Timestamp> {
    e.event_time
        .as_ref()
        .map(|t| t.0)
        .or(time(e.last_timestamp.as_ref()))
        .or(time(e.first_timestamp.as_ref()))
}

/// In `message` = `prefix"X"tail`, `X` and `tail`.
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<(&'m str, &'m str)> {
    message
        .strip_prefix(prefix)?
        .strip_prefix('"')?
        .split_once('"')
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// One span, ready to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The parent span, and whether it is another process's (an incoming
    /// context); `None` for a trace's root.
    pub parent: Option<([u8; 8], bool)>,
    pub name: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub attributes: Vec<(&'static str, Value)>,
    /// `Some(message)` for a span that failed; `None` for one that did not.
    pub error: Option<String>,
    pub sampled: bool,
}

impl Span {
    /// Replaces each of its texts (name, error, text attributes) with
    /// what `f` makes of it: where secrets are masked.
    pub fn map_texts(&mut self, f: impl Fn(&str) -> String) {
        self.name = f(&self.name);
        if let Some(e) = &mut self.error {
            *e = f(e);
        }
        for (_, v) in &mut self.attributes {
            if let Value::Str(s) = v {
                *s = f(s);
            }
        }
    }

    fn child(&self, id: [u8; 8], name: String, (start, end): (Timestamp, Timestamp)) -> Span {
        Span {
            trace_id: self.trace_id,
            span_id: id,
            parent: Some((self.span_id, false)),
            name,
            start,
            end: end.max(start),
            attributes: Vec::new(),
            error: None,
            sampled: self.sampled,
        }
    }

    fn attr(&mut self, key: &'static str, value: Value) {
        self.attributes.push((key, value));
    }

    fn text(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.attr(key, Value::Str(v.to_string()));
        }
    }

    /// The span's id for a child named by `parts`.
    fn child_id(&self, parts: &[&[u8]]) -> [u8; 8] {
        let mut all: Vec<&[u8]> = vec![b"child", &self.span_id];
        all.extend_from_slice(parts);
        derive(&all)
    }
}

fn time(t: Option<&Time>) -> Option<Timestamp> {
    t.map(|t| t.0)
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// The root span of a run, in its context, with the common attributes and
/// the outcome of its `Succeeded` condition.
fn run_span(
    ctx: &RunContext,
    meta: &ObjectMeta,
    name: String,
    (start, end): (Timestamp, Timestamp),
    conditions: &[Condition],
) -> Span {
    let mut span = Span {
        trace_id: ctx.own.trace_id,
        span_id: ctx.own.span_id,
        parent: ctx.parent.map(|p| (p.span_id, true)),
        name,
        start,
        end: end.max(start),
        attributes: Vec::new(),
        error: None,
        sampled: ctx.own.sampled,
    };
    span.text(
        "k8s.namespace.name",
        meta.namespace.as_deref().or(Some("default")),
    );
    let outcome = Condition::succeeded(conditions);
    let status = match outcome.map(|c| c.status.as_str()) {
        Some("True") => "succeeded",
        Some("False") => "failed",
        _ => "running",
    };
    span.attr("tekton.status", Value::Str(status.into()));
    span.text("tekton.reason", outcome.and_then(|c| c.reason.as_deref()));
    if status == "failed" {
        span.error = Some(failure(outcome));
    }
    span
}

/// What a failed run or attempt says of its failure: its condition's
/// message, else `failed`.
fn failure(outcome: Option<&Condition>) -> String {
    outcome
        .and_then(|c| c.message.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "failed".into())
}

/// The spans of an ended PipelineRun: its own and `queued` (its TaskRuns'
/// come from [`taskrun_spans`]). Nothing for a run that has not ended.
pub fn pipelinerun_spans(pr: &PipelineRun) -> Vec<Span> {
    let Some(st) = pr.status.as_ref() else {
        return Vec::new();
    };
    let Some(end) = time(st.completion_time.as_ref()) else {
        return Vec::new();
    };
    let meta = &pr.metadata;
    // Kubernetes keeps creation times to the second (and the TaskRuns'
    // times it stores): the run's span begins at the start of that second,
    // so that none of its children seems to begin before it.
    let start = time(meta.creation_timestamp.as_ref())
        .or(time(st.start_time.as_ref()))
        .map(|t| Timestamp::from_second(t.as_second()).unwrap_or(t))
        .unwrap_or(end);
    let run_name = meta.name.clone().unwrap_or_default();
    let pipeline = label(meta, "tekton.dev/pipeline").map(str::to_string);
    let name = format!(
        "PipelineRun {}",
        pipeline.as_deref().unwrap_or(run_name.as_str())
    );
    let mut root = run_span(
        &pipelinerun_context(pr),
        meta,
        name,
        (start, end),
        &st.conditions,
    );
    root.text("tekton.pipelinerun.name", Some(&run_name));
    root.text("tekton.pipeline.name", pipeline.as_deref());
    root.text(
        "tektite.environment",
        label(meta, crate::dora::ENVIRONMENT_LABEL),
    );
    let mut spans = Vec::new();
    let admitted = st
        .concurrency
        .as_ref()
        .and_then(|c| time(c.admitted_time.as_ref()));
    // Creation times are kept to the second: a run admitted within the
    // second it was created did not wait.
    let waited =
        |a: &Timestamp| a.duration_since(start) >= k8s_openapi::jiff::SignedDuration::from_secs(1);
    if let Some(admitted) = admitted.filter(waited) {
        let mut queued = root.child(
            root.child_id(&[b"queued"]),
            "queued".into(),
            (start, admitted),
        );
        let key = st.concurrency.as_ref().and_then(|c| c.key.as_deref());
        queued.text("tektite.concurrency.key", key);
        spans.push(queued);
    }
    spans.insert(0, root);
    spans
}

/// The spans of an ended TaskRun: its own, its earlier attempts', and
/// each attempt's waiting and steps. Nothing for a run that has not ended.
pub fn taskrun_spans(tr: &TaskRun) -> Vec<Span> {
    let Some(st) = tr.status.as_ref() else {
        return Vec::new();
    };
    let Some(end) = time(st.completion_time.as_ref()) else {
        return Vec::new();
    };
    let meta = &tr.metadata;
    let first = st.retries_status.first().unwrap_or(st);
    let start = time(first.start_time.as_ref())
        .or(time(meta.creation_timestamp.as_ref()))
        .unwrap_or(end);
    let run_name = meta.name.clone().unwrap_or_default();
    let pipeline_task = label(meta, "tekton.dev/pipelineTask");
    let name = format!("TaskRun {}", pipeline_task.unwrap_or(run_name.as_str()));
    let mut root = run_span(
        &taskrun_context(tr),
        meta,
        name,
        (start, end),
        &st.conditions,
    );
    root.text("tekton.taskrun.name", Some(&run_name));
    root.text("tekton.task.name", label(meta, "tekton.dev/task"));
    root.text("tekton.pipeline_task.name", pipeline_task);
    root.text(
        "tekton.pipelinerun.name",
        label(meta, "tekton.dev/pipelineRun"),
    );
    root.text("k8s.pod.name", st.pod_name.as_deref());
    let retries = i64::try_from(st.retries_status.len()).unwrap_or(i64::MAX);
    root.attr("tekton.retries", Value::Int(retries));
    let mut spans = Vec::new();
    for (i, attempt) in st.retries_status.iter().enumerate() {
        let number = (i + 1).to_string();
        let a_start = time(attempt.start_time.as_ref()).unwrap_or(start);
        let a_end = time(attempt.completion_time.as_ref()).unwrap_or(a_start);
        let id = root.child_id(&[b"attempt", number.as_bytes()]);
        let mut span = root.child(id, format!("attempt {number}"), (a_start, a_end));
        span.attr(
            "tekton.attempt",
            Value::Int(i64::try_from(i + 1).unwrap_or(0)),
        );
        span.text("k8s.pod.name", attempt.pod_name.as_deref());
        let outcome = Condition::succeeded(&attempt.conditions);
        span.text("tekton.reason", outcome.and_then(|c| c.reason.as_deref()));
        span.error = Some(failure(outcome));
        attempt_spans(&span, attempt, a_start, &mut spans);
        spans.push(span);
    }
    let last_start = time(st.start_time.as_ref()).unwrap_or(start);
    attempt_spans(&root, st, last_start, &mut spans);
    spans.insert(0, root);
    spans
}

/// An attempt's `pod pending` (from its start to its first step's) with
/// its image pulls, and its steps, under `parent`.
fn attempt_spans(parent: &Span, st: &TaskRunStatus, start: Timestamp, out: &mut Vec<Span>) {
    let step_start = |s: &StepState| time(s.terminated.as_ref()?.started_at.as_ref());
    let mut waits = parent;
    let pending;
    if let Some(first) = st.steps.iter().filter_map(step_start).min()
        && first > start
    {
        let mut span = parent.child(
            parent.child_id(&[b"pod pending"]),
            "pod pending".into(),
            (start, first),
        );
        span.text("k8s.pod.name", st.pod_name.as_deref());
        out.push(span.clone());
        pending = span;
        waits = &pending;
    }
    for (i, pull) in st.image_pulls.iter().enumerate() {
        let (Some(p_start), Some(p_end)) = (
            time(pull.start_time.as_ref()),
            time(pull.completion_time.as_ref()),
        ) else {
            continue;
        };
        let index = i.to_string();
        let id = waits.child_id(&[b"image pull", index.as_bytes(), pull.image.as_bytes()]);
        // Event times are kept to the second: within the wait it was part of.
        let p_start = p_start.clamp(waits.start, waits.end);
        let p_end = p_end.clamp(p_start, waits.end);
        let mut span = waits.child(id, "image pull".into(), (p_start, p_end));
        span.text("container.image.name", Some(&pull.image));
        out.push(span);
    }
    for (i, step) in st.steps.iter().enumerate() {
        let Some(term) = step.terminated.as_ref() else {
            continue;
        };
        let Some(s_start) = time(term.started_at.as_ref()) else {
            continue;
        };
        let s_end = time(term.finished_at.as_ref()).unwrap_or(s_start);
        let index = i.to_string();
        let id = parent.child_id(&[b"step", index.as_bytes(), step.name.as_bytes()]);
        let mut span = parent.child(id, format!("step {}", step.name), (s_start, s_end));
        span.text("tekton.step.name", Some(&step.name));
        span.attr("tekton.step.exit_code", Value::Int(term.exit_code.into()));
        let why = step
            .termination_reason
            .as_deref()
            .or(term.reason.as_deref());
        span.text("tekton.step.reason", why);
        if term.exit_code != 0 {
            span.error = Some(
                term.message
                    .clone()
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| format!("exit code {}", term.exit_code)),
            );
        }
        out.push(span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips_and_bad_headers_are_refused() {
        let c = SpanContext::parse(HEADER).expect("a valid header");
        assert_eq!(c.traceparent(), HEADER);
        assert!(c.sampled);
        let unsampled = SpanContext::parse(&HEADER.replace("-01", "-00")).expect("valid");
        assert!(!unsampled.sampled);
        // A later version may add fields; version 00 may not.
        assert!(SpanContext::parse(&format!("01{}-extra", &HEADER[2..])).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            &format!("{HEADER}-extra"),
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(SpanContext::parse(bad), None, "{bad:?}");
        }
    }

    fn meta(name: &str, annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ci".into()),
            uid: Some(format!("uid-{name}")),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn contexts_are_derived_the_same_every_time_and_follow_an_incoming_one() {
        let pr = PipelineRun {
            metadata: meta("p", &[]),
            ..Default::default()
        };
        let a = pipelinerun_context(&pr);
        assert_eq!(a, pipelinerun_context(&pr));
        assert_eq!(a.parent, None);
        let other = PipelineRun {
            metadata: meta("q", &[]),
            ..Default::default()
        };
        assert_ne!(pipelinerun_context(&other).own.trace_id, a.own.trace_id);

        let webhook = PipelineRun {
            metadata: meta("p", &[(TRACEPARENT_ANNOTATION, HEADER)]),
            ..Default::default()
        };
        let w = pipelinerun_context(&webhook);
        let parent = SpanContext::parse(HEADER);
        assert_eq!(w.parent, parent);
        assert_eq!(w.own.trace_id, parent.expect("valid").trace_id);
        assert_ne!(w.own.span_id, parent.expect("valid").span_id);

        let carrier = format!("{{\"traceparent\":\"{HEADER}\"}}");
        let tekton = PipelineRun {
            metadata: meta("p", &[(PIPELINERUN_SPAN_CONTEXT, &carrier)]),
            ..Default::default()
        };
        assert_eq!(pipelinerun_context(&tekton), w);
        let garbage = PipelineRun {
            metadata: meta("p", &[(PIPELINERUN_SPAN_CONTEXT, "{not json")]),
            ..Default::default()
        };
        assert_eq!(pipelinerun_context(&garbage), a);

        // A pipeline's TaskRun, carrying the run's context, is its child.
        let tr = TaskRun {
            metadata: meta("p-build", &[(TASKRUN_SPAN_CONTEXT, &a.own.carrier())]),
            ..Default::default()
        };
        let t = taskrun_context(&tr);
        assert_eq!(t.parent, Some(a.own));
        assert_eq!(t.own.trace_id, a.own.trace_id);

        // Its PipelineRun's context wins over a traceparent it was given
        // (a taskRunSpecs annotation, say).
        let mut given = tr.clone();
        given
            .metadata
            .annotations
            .as_mut()
            .expect("set")
            .insert(TRACEPARENT_ANNOTATION.into(), HEADER.into());
        assert_eq!(taskrun_context(&given), t);

        // TaskRuns without a uid (tkt's) of the same name under two runs
        // of the same name (one trace: the same webhook) differ.
        let mut second = webhook.clone();
        second.metadata.uid = Some("uid-p-again".into());
        let under = |pr: &PipelineRun| {
            let mut m = meta(
                "p-build",
                &[(TASKRUN_SPAN_CONTEXT, &pipelinerun_context(pr).own.carrier())],
            );
            m.uid = None;
            taskrun_context(&TaskRun {
                metadata: m,
                ..Default::default()
            })
            .own
        };
        assert_eq!(under(&webhook).trace_id, under(&second).trace_id);
        assert_ne!(under(&webhook).span_id, under(&second).span_id);
    }

    fn at(s: i64) -> Option<Time> {
        Some(Time(
            Timestamp::from_second(1_800_000_000 + s).expect("in range"),
        ))
    }

    fn cond(status: &str, reason: &str, message: &str) -> Vec<Condition> {
        vec![Condition {
            type_: "Succeeded".into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            ..Default::default()
        }]
    }

    fn step(name: &str, (start, end): (i64, i64), code: i32) -> StepState {
        StepState {
            name: name.into(),
            terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                exit_code: code,
                started_at: at(start),
                finished_at: at(end),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_retried_taskrun_has_an_attempt_span_with_its_own_steps() {
        let mut m = meta("p-test", &[]);
        m.labels = Some(
            [("tekton.dev/pipelineTask".to_string(), "test".to_string())]
                .into_iter()
                .collect(),
        );
        let first = TaskRunStatus {
            start_time: at(0),
            completion_time: at(10),
            pod_name: Some("p-test-pod".into()),
            conditions: cond("False", "Failed", "step flaky exited 1"),
            steps: vec![step("flaky", (4, 10), 1)],
            ..Default::default()
        };
        let tr = TaskRun {
            metadata: m,
            status: Some(TaskRunStatus {
                start_time: at(11),
                completion_time: at(20),
                pod_name: Some("p-test-pod-retry1".into()),
                conditions: cond("True", "Succeeded", "All Steps have completed executing"),
                steps: vec![step("flaky", (12, 20), 0)],
                retries_status: vec![first],
                ..Default::default()
            }),
            ..Default::default()
        };
        let spans = taskrun_spans(&tr);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "TaskRun test",
                "pod pending",
                "step flaky",
                "attempt 1",
                "pod pending",
                "step flaky"
            ]
        );
        let root = &spans[0];
        assert_eq!(root.parent, None);
        assert_eq!(
            (root.start, root.end),
            (at(0).expect("t").0, at(20).expect("t").0)
        );
        assert_eq!(root.error, None);
        let attempt = &spans[3];
        assert_eq!(attempt.parent, Some((root.span_id, false)));
        assert_eq!(attempt.error.as_deref(), Some("step flaky exited 1"));
        // The first attempt's step is under the attempt, and failed.
        assert_eq!(spans[2].parent, Some((attempt.span_id, false)));
        assert_eq!(spans[2].error.as_deref(), Some("exit code 1"));
        assert_eq!(spans[1].end, at(4).expect("t").0);
        // The last attempt's are under the TaskRun.
        assert_eq!(spans[5].parent, Some((root.span_id, false)));
        assert_eq!(spans[5].error, None);
        let ids: std::collections::BTreeSet<_> = spans.iter().map(|s| s.span_id).collect();
        assert_eq!(ids.len(), spans.len(), "span ids are unique");
        assert!(spans.iter().all(|s| s.trace_id == root.trace_id));
        assert_eq!(taskrun_spans(&tr), spans, "the same every time");
    }

    #[test]
    fn image_pulls_are_spans_of_the_wait_before_the_first_step() {
        let tr = TaskRun {
            metadata: meta("pulls", &[]),
            status: Some(TaskRunStatus {
                start_time: at(0),
                completion_time: at(30),
                conditions: cond("True", "Succeeded", ""),
                steps: vec![step("build", (12, 30), 0)],
                image_pulls: vec![
                    tektite_api::v1::ImagePull {
                        image: "registry.local/builder:1".into(),
                        start_time: at(1),
                        completion_time: at(9),
                    },
                    tektite_api::v1::ImagePull {
                        image: "no-times".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let spans = taskrun_spans(&tr);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["TaskRun pulls", "pod pending", "image pull", "step build"]
        );
        assert_eq!(spans[2].parent, Some((spans[1].span_id, false)));
        assert_eq!(
            (spans[2].start, spans[2].end),
            (at(1).expect("t").0, at(9).expect("t").0)
        );
        assert!(spans[2].attributes.contains(&(
            "container.image.name",
            Value::Str("registry.local/builder:1".into())
        )));
    }

    fn event(reason: &str, message: &str, s: i64) -> k8s_openapi::api::core::v1::Event {
        k8s_openapi::api::core::v1::Event {
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_timestamp: at(s),
            ..Default::default()
        }
    }

    #[test]
    fn pulls_are_read_from_the_kubelets_events() {
        let events = [
            event("Scheduled", "Successfully assigned ci/p to node-1", 0),
            event("Pulling", "Pulling image \"registry.local/app:1\"", 2),
            // Newer kubelets: the exact duration, the image size.
            event(
                "Pulled",
                "Successfully pulled image \"registry.local/app:1\" in 3.5s (3.5s including waiting). Image size: 1234 bytes.",
                6,
            ),
            event("Created", "Created container step-build", 6),
            event(
                "Pulled",
                "Container image \"busybox:1\" already present on machine",
                6,
            ),
            // Older ones without a duration: from the Pulling event.
            event("Pulling", "Pulling image \"tools:2\"", 7),
            event("Pulled", "Successfully pulled image \"tools:2\"", 9),
            event("Pulled", "garbage", 9),
        ];
        let pulls = pulls_from_events(&events);
        let got: Vec<(&str, i64, i64)> = pulls
            .iter()
            .map(|p| {
                let t = |x: &Option<Time>| x.as_ref().expect("set").0.as_millisecond();
                (p.image.as_str(), t(&p.start_time), t(&p.completion_time))
            })
            .collect();
        let ms = |s: i64| at(s).expect("t").0.as_millisecond();
        assert_eq!(
            got,
            [
                ("registry.local/app:1", ms(6) - 3500, ms(6)),
                ("tools:2", ms(7), ms(9)),
            ]
        );
    }

    #[test]
    fn the_attempt_that_ends_is_the_retried_one_or_the_runs_own() {
        let running = TaskRunStatus {
            pod_name: Some("p-pod".into()),
            conditions: cond("Unknown", "Running", ""),
            ..Default::default()
        };
        // Still running: none.
        let mut same = running.clone();
        assert!(ended_attempt(Some(&running), &mut same).is_none());
        // A retry archived the attempt: that one.
        let mut retried = TaskRunStatus {
            retries_status: vec![running.clone()],
            ..Default::default()
        };
        let a = ended_attempt(Some(&running), &mut retried).expect("the archived attempt");
        assert_eq!(a.pod_name.as_deref(), Some("p-pod"));
        // Ended now: the run's own; ended before, or pulls recorded: none.
        let mut done = TaskRunStatus {
            conditions: cond("True", "Succeeded", ""),
            ..running.clone()
        };
        assert!(ended_attempt(Some(&running), &mut done.clone()).is_some());
        assert!(ended_attempt(Some(&done.clone()), &mut done).is_none());
        let mut recorded = TaskRunStatus {
            image_pulls: vec![ImagePull::default()],
            ..done.clone()
        };
        assert!(ended_attempt(Some(&running), &mut recorded).is_none());
    }

    #[test]
    fn an_attempts_pulls_are_its_pods_and_not_older_than_it() {
        let of =
            |pod: &str, e: k8s_openapi::api::core::v1::Event| k8s_openapi::api::core::v1::Event {
                involved_object: k8s_openapi::api::core::v1::ObjectReference {
                    kind: Some("Pod".into()),
                    name: Some(pod.into()),
                    ..Default::default()
                },
                ..e
            };
        let pulled = |image: &str, s: i64| {
            event(
                "Pulled",
                &format!("Successfully pulled image \"{image}\" in 1s"),
                s,
            )
        };
        let events = [
            of("p-pod", pulled("old", 5)),
            of("p-pod", pulled("new", 12)),
            of("other-pod", pulled("theirs", 12)),
        ];
        let attempt = TaskRunStatus {
            pod_name: Some("p-pod".into()),
            start_time: at(10),
            ..Default::default()
        };
        let images: Vec<String> = attempt_pulls(&events, &attempt)
            .into_iter()
            .map(|p| p.image)
            .collect();
        assert_eq!(images, ["new"]);
    }

    #[test]
    fn every_text_of_a_span_is_mapped() {
        let tr = TaskRun {
            metadata: meta("s3cret", &[]),
            status: Some(TaskRunStatus {
                start_time: at(0),
                completion_time: at(1),
                conditions: cond("False", "Failed", "s3cret leaked"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut span = taskrun_spans(&tr).remove(0);
        span.map_texts(|t| t.replace("s3cret", "***"));
        assert_eq!(span.name, "TaskRun ***");
        assert_eq!(span.error.as_deref(), Some("*** leaked"));
        assert!(
            span.attributes
                .contains(&("tekton.taskrun.name", Value::Str("***".into())))
        );
        assert!(span.attributes.contains(&("tekton.retries", Value::Int(0))));
    }

    #[test]
    fn a_run_not_ended_has_no_spans_and_a_queued_run_waited() {
        let mut pr = PipelineRun {
            metadata: meta("p", &[]),
            ..Default::default()
        };
        pr.metadata.creation_timestamp = at(0);
        assert!(pipelinerun_spans(&pr).is_empty());
        pr.status = Some(tektite_api::v1::PipelineRunStatus {
            start_time: at(30),
            conditions: cond("Unknown", "Running", ""),
            ..Default::default()
        });
        assert!(pipelinerun_spans(&pr).is_empty());
        let st = pr.status.as_mut().expect("set");
        st.completion_time = at(90);
        st.conditions = cond("False", "Failed", "Tasks Completed: 2 (Failed: 1)");
        st.concurrency = Some(tektite_api::v1::ConcurrencyStatus {
            key: Some("deploy".into()),
            admitted_time: at(30),
            ..Default::default()
        });
        let spans = pipelinerun_spans(&pr);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].name, "PipelineRun p");
        assert_eq!(
            spans[0].error.as_deref(),
            Some("Tasks Completed: 2 (Failed: 1)")
        );
        assert_eq!(spans[1].name, "queued");
        // Admitted within the second of its creation: no wait.
        let mut at_once = pr.clone();
        if let Some(c) = at_once.status.as_mut().and_then(|s| s.concurrency.as_mut()) {
            c.admitted_time = Some(Time(
                at(0).expect("t").0 + k8s_openapi::jiff::SignedDuration::from_millis(400),
            ));
        }
        assert_eq!(pipelinerun_spans(&at_once).len(), 1);
        assert_eq!(
            (spans[1].start, spans[1].end),
            (at(0).expect("t").0, at(30).expect("t").0)
        );
        assert!(
            spans[0]
                .attributes
                .contains(&("tekton.status", Value::Str("failed".into())))
        );
    }
}
