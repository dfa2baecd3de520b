//! Traces from the controller on the dev cluster: `config-defaults` points
//! it at a real OTLP endpoint on loopback (gRPC), and a PipelineRun from a
//! webhook (its `traceparent` annotation) with a retry, a failing task and
//! finally gives one trace under the webhook's span, with each TaskRun,
//! attempt and step, the steps timed by their reports and given their
//! TaskRun's span as `TRACEPARENT`.

use std::time::Duration;

use serde_json::json;
use tektite_telemetry::receiver::{Received, Receiver};

use super::{
    BUSYBOX, Cluster, Image, Registry, condition, podman, podman_ready, results, runs_dir,
};

const WEBHOOK: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn one<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one span {name:?} in {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhooks_pipelinerun_is_one_trace_with_its_tasks_attempts_and_steps() {
    if !podman_ready() {
        return;
    }
    let receiver = Receiver::start();
    let c = Cluster::start(&[]).await;
    c.create(
        "configmaps",
        "tektite",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config-defaults"},
               "data": {"tracing-endpoint": receiver.grpc, "tracing-protocol": "grpc"}}),
    );
    c.wait_log("configuration applied").await;
    let runs = c.create_file(&runs_dir().join("pipeline-traced.yaml"), "ci");
    let pr = c.done("pipelineruns", "ci", &runs[0].1).await;
    assert_eq!(condition(&pr).1, "Failed", "{pr}");
    let kids = c.children(&runs[0].1);
    let spans = receiver.wait_for(Duration::from_secs(30), |s| {
        [
            "PipelineRun traced",
            "TaskRun flaky",
            "TaskRun deploy",
            "TaskRun notify",
        ]
        .iter()
        .all(|n| s.iter().any(|r| r.name == *n))
    });
    let root = one(&spans, "PipelineRun traced");
    assert_eq!(root.trace_id, &WEBHOOK[3..35], "the webhook's trace");
    assert_eq!(root.parent_span_id, &WEBHOOK[36..52]);
    assert_eq!(root.service_name, "tektite-controller");
    assert_eq!(root.attributes["k8s.namespace.name"], "ci");
    assert_eq!(root.attributes["tekton.status"], "failed");
    assert!(
        spans
            .iter()
            .all(|s| s.trace_id == root.trace_id && s.protocol == "grpc")
    );
    for task in ["flaky", "deploy", "notify"] {
        let span = one(&spans, &format!("TaskRun {task}"));
        assert_eq!(span.parent_span_id, root.span_id, "{task}");
        assert!(
            span.start_unix_nano >= root.start_unix_nano,
            "{task} within the run"
        );
        assert!(
            span.end_unix_nano <= root.end_unix_nano,
            "{task} within the run"
        );
    }
    let flaky = one(&spans, "TaskRun flaky");
    let attempt = one(&spans, "attempt 1");
    assert_eq!(attempt.parent_span_id, flaky.span_id);
    assert!(attempt.error.is_some());
    let tries: Vec<&Received> = spans.iter().filter(|s| s.name == "step try").collect();
    assert_eq!(tries.len(), 2, "{tries:#?}");
    assert!(tries.iter().any(|s| s.parent_span_id == attempt.span_id));
    assert!(tries.iter().any(|s| s.parent_span_id == flaky.span_id));
    let deploy = one(&spans, "TaskRun deploy");
    assert_eq!(
        deploy.attributes["k8s.pod.name"],
        kids["deploy"]["status"]["podName"]
    );
    let apply = one(&spans, "step apply");
    assert_eq!(apply.parent_span_id, deploy.span_id);
    assert_eq!(apply.attributes["tekton.step.exit_code"], "2");
    // The step's span is its report's start and end (which the stored
    // status keeps to the second).
    let term = kids["deploy"]["status"]["steps"][0]["terminated"].clone();
    let second = |k: &str| {
        let t: k8s_openapi::jiff::Timestamp = term[k].as_str().unwrap().parse().unwrap();
        u64::try_from(t.as_second()).unwrap()
    };
    assert_eq!(apply.start_unix_nano / 1_000_000_000, second("startedAt"));
    assert_eq!(apply.end_unix_nano / 1_000_000_000, second("finishedAt"));
    // The finally step was given its TaskRun's span.
    let notify = one(&spans, "TaskRun notify");
    assert_eq!(
        results(&kids["notify"])["tp"],
        format!("00-{}-{}-01", notify.trace_id, notify.span_id)
    );
}

/// An image the kubelet pulls for a pod: its `Pulling`/`Pulled` events
/// become the attempt's `imagePulls`, and an `image pull` span within
/// `pod pending`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_the_kubelet_pulls_is_a_span_from_the_pods_events() {
    if !podman_ready() {
        return;
    }
    let registry = Registry::start();
    let image = Image(format!("{}/tektite/pulled-by-kubelet:1", registry.host));
    podman(&["tag", BUSYBOX, &image.0]);
    podman(&["push", "--quiet", "--tls-verify=false", &image.0]);
    podman(&["rmi", &image.0]);
    let receiver = Receiver::start();
    let c = Cluster::start_with(
        &["--plain-http-registry", &registry.host],
        vec![registry.host.clone()],
    )
    .await;
    c.create(
        "configmaps",
        "tektite",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config-defaults"},
               "data": {"tracing-endpoint": receiver.http}}),
    );
    c.wait_log("configuration applied").await;
    c.create(
        "taskruns",
        "ci",
        json!({"apiVersion": super::TEKTON, "kind": "TaskRun", "metadata": {"name": "pulls"},
               "spec": {"taskSpec": {"steps": [
                   {"name": "one", "image": image.0, "script": "echo pulled"}]}}}),
    );
    let tr = c.done("taskruns", "ci", "pulls").await;
    assert_eq!(condition(&tr).0, "True", "{tr}");
    assert_eq!(
        tr["status"]["imagePulls"][0]["image"],
        image.0.as_str(),
        "{tr}"
    );
    let spans = receiver.wait_for(Duration::from_secs(30), |s| {
        s.iter().any(|r| r.name == "TaskRun pulls")
    });
    let pull = one(&spans, "image pull");
    assert_eq!(pull.attributes["container.image.name"], image.0);
    assert_eq!(pull.parent_span_id, one(&spans, "pod pending").span_id);
    assert!(pull.end_unix_nano <= one(&spans, "step one").start_unix_nano);
}
