//! The exporter against a real OTLP endpoint on loopback (the `receiver`
//! feature's gRPC and HTTP servers decode what arrives with the
//! `opentelemetry-proto` types): every protocol carries the same span
//! tree, and a collector that is down or silent costs an error, in time.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ContainerStateTerminated;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use tektite_api::v1::{
    Condition, PipelineRun, PipelineRunStatus, StepState, TaskRun, TaskRunStatus,
};
use tektite_engine::trace::{self, Span};
use tektite_telemetry::receiver::{Received, Receiver};
use tektite_telemetry::{Protocol, Settings, Traces, export_blocking};

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
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            started_at: at(start),
            finished_at: at(end),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn meta(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
    let map = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("ci".into()),
        uid: Some(format!("uid-{name}")),
        creation_timestamp: at(0),
        labels: Some(map(labels)),
        annotations: Some(map(annotations)),
        ..Default::default()
    }
}

const WEBHOOK: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A pipeline run from a webhook: `flaky` failed once and passed on its
/// retry, `deploy` failed, the finally `notify` ran.
fn pipeline() -> (PipelineRun, Vec<TaskRun>) {
    let pr = PipelineRun {
        metadata: meta(
            "release-1",
            &[("tekton.dev/pipeline", "release")],
            &[(trace::TRACEPARENT_ANNOTATION, WEBHOOK)],
        ),
        status: Some(PipelineRunStatus {
            start_time: at(1),
            completion_time: at(60),
            conditions: cond(
                "False",
                "Failed",
                "Tasks Completed: 3 (Failed: 1, Cancelled 0), Skipped: 0",
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let carrier = trace::pipelinerun_context(&pr).own.carrier();
    let task_run = |name: &str, task: &str, st: TaskRunStatus| TaskRun {
        metadata: meta(
            name,
            &[
                ("tekton.dev/pipelineTask", task),
                ("tekton.dev/pipelineRun", "release-1"),
            ],
            &[(trace::TASKRUN_SPAN_CONTEXT, &carrier)],
        ),
        status: Some(st),
        ..Default::default()
    };
    let flaky = task_run(
        "release-1-flaky",
        "flaky",
        TaskRunStatus {
            start_time: at(12),
            completion_time: at(20),
            conditions: cond("True", "Succeeded", "All Steps have completed executing"),
            steps: vec![step("check", (13, 20), 0)],
            retries_status: vec![TaskRunStatus {
                start_time: at(2),
                completion_time: at(11),
                conditions: cond("False", "Failed", "\"step-check\" exited with code 1"),
                steps: vec![step("check", (3, 11), 1)],
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    let deploy = task_run(
        "release-1-deploy",
        "deploy",
        TaskRunStatus {
            start_time: at(21),
            completion_time: at(40),
            conditions: cond("False", "Failed", "\"step-apply\" exited with code 2"),
            steps: vec![step("apply", (25, 40), 2)],
            ..Default::default()
        },
    );
    let notify = task_run(
        "release-1-notify",
        "notify",
        TaskRunStatus {
            start_time: at(41),
            completion_time: at(59),
            conditions: cond("True", "Succeeded", "All Steps have completed executing"),
            steps: vec![step("send", (42, 59), 0)],
            ..Default::default()
        },
    );
    (pr, vec![flaky, deploy, notify])
}

fn all_spans() -> Vec<Span> {
    let (pr, trs) = pipeline();
    let mut spans = trace::pipelinerun_spans(&pr);
    for tr in &trs {
        spans.extend(trace::taskrun_spans(tr));
    }
    spans
}

fn settings(endpoint: &str, protocol: Protocol) -> Settings {
    Settings {
        endpoint: Some(endpoint.into()),
        protocol,
        service_name: "tektite-test".into(),
        timeout: Duration::from_secs(5),
    }
}

fn by_name<'a>(spans: &'a [Received], name: &str) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let found = by_name(spans, name);
    assert_eq!(found.len(), 1, "one span {name:?} in {spans:#?}");
    found[0]
}

/// The tree every protocol must deliver.
fn check_tree(got: &[Received]) {
    let expected = all_spans();
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    let trace_id = &WEBHOOK[3..35];
    assert!(
        got.iter().all(|s| s.trace_id == trace_id),
        "one trace, the webhook's"
    );
    assert!(got.iter().all(|s| s.service_name == "tektite-test"));
    let root = one(got, "PipelineRun release");
    assert_eq!(
        root.parent_span_id,
        &WEBHOOK[36..52],
        "a child of the webhook's span"
    );
    assert_eq!(root.attributes["tekton.status"], "failed");
    assert_eq!(root.attributes["k8s.namespace.name"], "ci");
    assert_eq!(root.attributes["tekton.pipelinerun.name"], "release-1");
    assert!(
        root.error
            .as_deref()
            .is_some_and(|e| e.contains("Failed: 1"))
    );
    assert_eq!(root.end_unix_nano - root.start_unix_nano, 60_000_000_000);
    for task in ["flaky", "deploy", "notify"] {
        let span = one(got, &format!("TaskRun {task}"));
        assert_eq!(span.parent_span_id, root.span_id, "{task} is under the run");
    }
    let flaky = one(got, "TaskRun flaky");
    assert_eq!(flaky.attributes["tekton.retries"], "1");
    assert_eq!(flaky.error, None);
    let attempt = one(got, "attempt 1");
    assert_eq!(attempt.parent_span_id, flaky.span_id);
    assert!(
        attempt
            .error
            .as_deref()
            .is_some_and(|e| e.contains("exited with code 1"))
    );
    let checks = by_name(got, "step check");
    assert_eq!(checks.len(), 2);
    assert!(checks.iter().any(|s| s.parent_span_id == attempt.span_id
        && s.attributes["tekton.step.exit_code"] == "1"
        && s.error.is_some()));
    assert!(
        checks
            .iter()
            .any(|s| s.parent_span_id == flaky.span_id && s.error.is_none())
    );
    let deploy = one(got, "TaskRun deploy");
    assert!(
        deploy
            .error
            .as_deref()
            .is_some_and(|e| e.contains("step-apply"))
    );
    let apply = one(got, "step apply");
    assert_eq!(apply.parent_span_id, deploy.span_id);
    assert_eq!(
        apply.end_unix_nano - apply.start_unix_nano,
        15_000_000_000,
        "timed by the step's report"
    );
    // Waiting: from each attempt's start to its first step.
    let pending = by_name(got, "pod pending");
    assert_eq!(pending.len(), 4, "{pending:#?}");
    assert!(pending.iter().any(|p| p.parent_span_id == deploy.span_id
        && p.end_unix_nano - p.start_unix_nano == 4_000_000_000));
}

#[test]
fn every_protocol_delivers_the_span_tree_of_a_pipeline_with_a_retry_a_failure_and_finally() {
    let receiver = Receiver::start();
    let spans = all_spans();
    for (endpoint, protocol, name) in [
        (&receiver.grpc, Protocol::Grpc, "grpc"),
        (&receiver.http, Protocol::HttpProtobuf, "http/protobuf"),
        (&receiver.http, Protocol::HttpJson, "http/json"),
    ] {
        let sent = export_blocking(&settings(endpoint, protocol), &spans).expect("exported");
        assert_eq!(sent, spans.len());
        let got: Vec<Received> = receiver
            .wait_for(Duration::from_secs(10), |s| {
                s.iter().filter(|r| r.protocol == name).count() >= spans.len()
            })
            .into_iter()
            .filter(|r| r.protocol == name)
            .collect();
        check_tree(&got);
    }
}

#[test]
fn an_unsampled_incoming_context_sends_nothing() {
    let receiver = Receiver::start();
    let (mut pr, _) = pipeline();
    let unsampled = WEBHOOK.replace("-01", "-00");
    pr.metadata
        .annotations
        .as_mut()
        .expect("set")
        .insert(trace::TRACEPARENT_ANNOTATION.into(), unsampled);
    let spans = trace::pipelinerun_spans(&pr);
    assert!(!spans.is_empty());
    let sent = export_blocking(&settings(&receiver.http, Protocol::HttpProtobuf), &spans)
        .expect("nothing to fail");
    assert_eq!(sent, 0);
}

#[test]
fn a_collector_that_is_down_or_silent_is_an_error_not_a_hang() {
    // Down: a port that nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let spans = all_spans();
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let mut s = settings(&format!("http://127.0.0.1:{port}"), protocol);
        s.timeout = Duration::from_secs(2);
        let e = export_blocking(&s, &spans).expect_err("nobody listens");
        assert!(e.starts_with("OTLP export failed"), "{e}");
    }
    // Silent: accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let mut s = settings(&format!("http://{addr}"), Protocol::HttpProtobuf);
    s.timeout = Duration::from_secs(1);
    let e = export_blocking(&s, &spans).expect_err("no answer");
    assert!(e.starts_with("OTLP export failed"), "{e}");
    drop(silent);
}

/// Each run's spans, as the controller hands them over (one run a time).
fn runs_spans() -> Vec<Vec<Span>> {
    let (pr, trs) = pipeline();
    std::iter::once(trace::pipelinerun_spans(&pr))
        .chain(trs.iter().map(trace::taskrun_spans))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_exporter_sends_each_run_once_and_never_holds_its_caller() {
    let receiver = Receiver::start();
    let traces = Traces::start(Some(settings(&receiver.http, Protocol::HttpProtobuf)));
    // A run ended twice by stale reconciles is sent once.
    for _ in 0..2 {
        for run in runs_spans() {
            traces.send(run);
        }
    }
    let want = all_spans().len();
    let got = tokio::task::spawn_blocking(move || {
        receiver.wait_for(Duration::from_secs(10), |s| s.len() >= want);
        std::thread::sleep(Duration::from_millis(300));
        receiver.spans()
    })
    .await
    .expect("joined");
    check_tree(&got);

    // A collector that is down: every hand-over returns at once, whatever
    // the queue holds (past its bound, spans are dropped with a warning).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let down = Traces::start(Some(settings(
        &format!("http://127.0.0.1:{port}"),
        Protocol::Grpc,
    )));
    let (pr, _) = pipeline();
    for i in 0..10_000 {
        let mut run = pr.clone();
        run.metadata.uid = Some(format!("uid-{i}"));
        down.send(trace::pipelinerun_spans(&run));
    }
    // Off: nothing more is sent.
    down.configure(None);
}
