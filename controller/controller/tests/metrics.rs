//! The metrics: their text passes `promtool check metrics`, carries Tekton's
//! names and no run names, and the alert rules shipped in
//! `controller/config/prometheus/` fire on them (`promtool test rules`); the
//! HTTP endpoints answer. promtool comes from Debian's `prometheus` package
//! (`hack/setup-catalog-tools.sh`).

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;
use tektite_api::v1::{Condition, PipelineRun, TaskRun};
use tektite_controller::metrics::{Level, Metrics};
use tektite_engine::dora::Deployment;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn cond(status: &str, reason: &str) -> Vec<Condition> {
    serde_json::from_value(
        json!([{"type": "Succeeded", "status": status, "reason": reason,
        "message": "", "lastTransitionTime": "2026-11-27T10:00:00Z"}]),
    )
    .unwrap()
}

fn task_run(name: &str, pipeline: Option<&str>) -> TaskRun {
    let mut v = json!({"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
        "metadata": {"name": name, "namespace": "ci"},
        "spec": {"taskRef": {"name": "build"}}});
    if let Some(p) = pipeline {
        v["metadata"]["labels"] = json!({"tekton.dev/pipeline": p});
    }
    serde_json::from_value(v).unwrap()
}

fn pipeline_run(name: &str) -> PipelineRun {
    serde_json::from_value(json!({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": "ci"},
        "spec": {"pipelineRef": {"name": "release"}}}))
    .unwrap()
}

/// Metrics with some of everything recorded.
fn recorded(level: Level) -> Metrics {
    let m = Metrics::new(level, level);
    m.pipelinerun_done(
        &pipeline_run("release-abc12"),
        &cond("True", "Succeeded"),
        95.0,
    );
    m.pipelinerun_done(
        &pipeline_run("release-def34"),
        &cond("False", "Failed"),
        20.0,
    );
    m.pipelinerun_done(
        &pipeline_run("release-ghi56"),
        &cond("False", "Cancelled"),
        3.0,
    );
    m.taskrun_done(
        &task_run("release-abc12-build", Some("release")),
        &cond("True", "Succeeded"),
        40.0,
    );
    m.taskrun_done(
        &task_run("lone-run", None),
        &cond("False", "TaskRunCancelled"),
        2.0,
    );
    m.pod_created(&task_run("lone-run", None), Duration::from_millis(42));
    m.set_running(3, 1);
    m.queue_waited(12.5);
    m.set_queues(&[(("ci".to_string(), "deploy-prod".to_string()), (1, 2))].into());
    m.reconciled("TaskRun", None, Duration::from_millis(4));
    m.reconciled("TaskRun", Some("api_500"), Duration::from_millis(9));
    let (failed, fixed) = (
        deployment("prod", false, None),
        deployment("prod", true, Some(1800)),
    );
    m.deployment_done(&meta("release-d1"), &failed, None);
    m.deployment_done(&meta("release-d2"), &fixed, Some(5400));
    m
}

/// A finished deployment to `env`, committed `lead` seconds before it
/// ended.
fn deployment(env: &str, succeeded: bool, lead: Option<i64>) -> Deployment {
    Deployment {
        name: format!("{env}-run"),
        environment: env.into(),
        succeeded,
        finished: 1_800_000_000,
        committed: lead.map(|l| 1_800_000_000 - l),
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("ci".into()),
        uid: Some(format!("uid-{name}")),
        ..ObjectMeta::default()
    }
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed: run hack/setup-catalog-tools.sh (Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// promtool's one objection: Tekton names its pod latency metric in
/// milliseconds, and dashboards and alerts use that name, so it stays.
const TEKTON_UNIT: &str = r#"tekton_pipelines_controller_taskruns_pod_latency_milliseconds use base unit "seconds" instead of "milliseconds""#;

#[test]
fn promtool_accepts_the_metrics() {
    for level in [Level::Name, Level::Namespace] {
        let text = recorded(level).render();
        let (_, out) = promtool(&["check", "metrics"], Some(&text));
        let problems: Vec<&str> = out.lines().filter(|l| *l != TEKTON_UNIT).collect();
        assert!(problems.is_empty(), "promtool check metrics: {out}\n{text}");
        // And with that metric left out, promtool passes outright.
        let without: String = text
            .lines()
            .filter(|l| !l.contains("taskruns_pod_latency_milliseconds"))
            .map(|l| format!("{l}\n"))
            .collect();
        let (ok, out) = promtool(&["check", "metrics"], Some(&without));
        assert!(
            ok && out.trim().is_empty(),
            "promtool check metrics: {out}\n{without}"
        );
    }
}

#[test]
fn tekton_names_and_labels_without_run_names() {
    let text = recorded(Level::Name).render();
    for line in [
        r#"tekton_pipelines_controller_pipelinerun_total{status="success"} 1"#,
        r#"tekton_pipelines_controller_pipelinerun_total{status="failed"} 1"#,
        r#"tekton_pipelines_controller_pipelinerun_total{status="cancelled"} 1"#,
        r#"tekton_pipelines_controller_taskrun_total{status="cancelled"} 1"#,
        r#"tekton_pipelines_controller_pipelinerun_duration_seconds_count{namespace="ci",pipeline="release",status="success"} 1"#,
        r#"tekton_pipelines_controller_pipelinerun_taskrun_duration_seconds_count{namespace="ci",pipeline="release",task="build",status="success"} 1"#,
        r#"tekton_pipelines_controller_taskrun_duration_seconds_count{namespace="ci",task="build",status="cancelled"} 1"#,
        r#"tekton_pipelines_controller_taskruns_pod_latency_milliseconds{namespace="ci",task="build"} 42"#,
        "tekton_pipelines_controller_running_taskruns 3",
        "tekton_pipelines_controller_running_pipelineruns 1",
        r#"tektite_controller_reconcile_errors_total{kind="TaskRun",error="api_500"} 1"#,
        r#"tektite_controller_reconcile_total{kind="TaskRun",result="ok"} 1"#,
        r#"tektite_deployments_total{environment="prod",status="failed"} 1"#,
        r#"tektite_deployments_total{environment="prod",status="succeeded"} 1"#,
        r#"tektite_deployment_lead_time_seconds_bucket{le="1800.0",environment="prod"} 1"#,
        r#"tektite_deployment_lead_time_seconds_bucket{le="900.0",environment="prod"} 0"#,
        r#"tektite_recovery_time_seconds_sum{environment="prod"} 5400.0"#,
        r#"tektite_recovery_time_seconds_count{environment="prod"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    for run in ["release-abc12", "lone-run", "release-abc12-build"] {
        assert!(!text.contains(run), "a run name in the metrics: {run}");
    }
    // The namespace level drops the pipeline and task labels.
    let text = recorded(Level::Namespace).render();
    assert!(text.contains(r#"tekton_pipelines_controller_pipelinerun_duration_seconds_count{namespace="ci",status="success"} 1"#), "{text}");
    assert!(
        !text.contains("pipeline=\"release\"") && !text.contains("task=\"build\""),
        "{text}"
    );
}

#[test]
fn the_shipped_alerts_fire_on_these_names() {
    let (ok, out) = promtool(&["test", "rules", "alerts_test.yaml"], None);
    assert!(ok, "promtool test rules: {out}");
    assert!(out.contains("SUCCESS"), "{out}");
    // Every metric the alerts use is one the controller exports.
    let alerts = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/prometheus/alerts.yaml"),
    )
    .unwrap();
    let text = recorded(Level::Name).render();
    for name in [
        "tekton_pipelines_controller_pipelinerun_total",
        "tekton_pipelines_controller_taskruns_pod_latency_milliseconds",
        "tektite_controller_reconcile_errors_total",
        "tektite_log_archive_failures_total",
    ] {
        assert!(alerts.contains(name), "alerts.yaml does not use {name}");
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "not exported: {name}"
        );
    }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test]
async fn the_endpoints_answer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(recorded(Level::Name));
    let ready = Arc::new(AtomicBool::new(false));
    let refreshed = Arc::new(AtomicBool::new(false));
    let r = refreshed.clone();
    tokio::spawn(tektite_controller::metrics::serve(
        listener,
        metrics,
        ready.clone(),
        Arc::new(move || r.store(true, Ordering::Relaxed)),
    ));
    assert_eq!(get(addr, "/healthz").await.0, "HTTP/1.1 200 OK");
    assert_eq!(
        get(addr, "/readyz").await.0,
        "HTTP/1.1 503 Service Unavailable"
    );
    ready.store(true, Ordering::Relaxed);
    assert_eq!(get(addr, "/readyz").await.0, "HTTP/1.1 200 OK");
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        body.contains("tekton_pipelines_controller_running_taskruns 3"),
        "{body}"
    );
    assert!(
        refreshed.load(Ordering::Relaxed),
        "the running gauges were not refreshed"
    );
    assert_eq!(get(addr, "/nope").await.0, "HTTP/1.1 404 Not Found");
}

/// Regression: a reconcile working from a cache older than its own status
/// write planned a run's end again, and `pipelinerun_total` counted a
/// cancelled run twice (seen as a flake of the cluster test).
#[test]
fn a_run_ended_twice_by_stale_reconciles_is_counted_once() {
    let m = Metrics::new(Level::Name, Level::Name);
    let mut pr = pipeline_run("release-abc12");
    pr.metadata.uid = Some("9d1c".into());
    let mut tr = task_run("release-abc12-build", Some("release"));
    tr.metadata.uid = Some("77aa".into());
    for _ in 0..3 {
        m.pipelinerun_done(&pr, &cond("False", "Cancelled"), 3.0);
        m.taskrun_done(&tr, &cond("False", "TaskRunCancelled"), 2.0);
    }
    // Another run of the same name (deleted and created again) counts.
    pr.metadata.uid = Some("e5f0".into());
    m.pipelinerun_done(&pr, &cond("False", "Cancelled"), 3.0);
    let text = m.render();
    for line in [
        r#"tekton_pipelines_controller_pipelinerun_total{status="cancelled"} 2"#,
        r#"tekton_pipelines_controller_taskrun_total{status="cancelled"} 1"#,
        r#"tekton_pipelines_controller_pipelinerun_duration_seconds_count{namespace="ci",pipeline="release",status="cancelled"} 2"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
}

#[test]
fn queue_gauges_label_at_most_fifty_keys_and_sum_the_rest() {
    let m = Metrics::new(Level::Name, Level::Name);
    let counts: tektite_controller::metrics::QueueCounts = (0..60)
        .map(|i| (("ci".to_string(), format!("key-{i:02}")), (1, i)))
        .collect();
    m.set_queues(&counts);
    let text = m.render();
    let queued: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tektite_concurrency_queued{"))
        .collect();
    assert_eq!(
        queued.len(),
        tektite_controller::metrics::MAX_KEYS + 1,
        "{text}"
    );
    // The busiest keep their labels; the ten least busy (0..9 queued) are
    // summed: 45 queued, 10 running.
    assert!(
        text.contains(r#"tektite_concurrency_queued{namespace="ci",key="key-59"} 59"#),
        "{text}"
    );
    assert!(!text.contains("key-09"), "{text}");
    assert!(
        text.contains(r#"tektite_concurrency_queued{namespace="_other",key="_other"} 45"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tektite_concurrency_running{namespace="_other",key="_other"} 10"#),
        "{text}"
    );
    // A scrape after the queues emptied drops the old series.
    m.set_queues(&Default::default());
    assert!(!m.render().contains("tektite_concurrency_queued{"));
}

#[test]
fn the_dora_rules_compute_on_these_names() {
    let (ok, out) = promtool(&["test", "rules", "dora_test.yaml"], None);
    assert!(ok, "promtool test rules: {out}");
    assert!(out.contains("SUCCESS"), "{out}");
    // Every metric the rules use is one the controller exports.
    let rules = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/prometheus/dora.yaml"),
    )
    .unwrap();
    let text = recorded(Level::Name).render();
    for name in [
        "tektite_deployments_total",
        "tektite_deployment_lead_time_seconds_bucket",
        "tektite_recovery_time_seconds_sum",
        "tektite_recovery_time_seconds_count",
    ] {
        assert!(rules.contains(name), "dora.yaml does not use {name}");
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "not exported: {name}"
        );
    }
}

#[test]
fn deployments_are_counted_once_and_label_at_most_twenty_environments() {
    let m = Metrics::new(Level::Name, Level::Name);
    // A deployment ended again by a stale reconcile counts once.
    for _ in 0..3 {
        m.deployment_done(&meta("d"), &deployment("prod", true, Some(60)), None);
    }
    // A failure observes no lead or restore time.
    m.deployment_done(&meta("f"), &deployment("prod", false, Some(60)), Some(60));
    for i in 0..25 {
        m.deployment_done(
            &meta(&format!("e{i}")),
            &deployment(&format!("env-{i:02}"), true, None),
            None,
        );
    }
    let text = m.render();
    let counted: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tektite_deployments_total{"))
        .collect();
    // prod (2 statuses) and 19 more environments by name, then _other.
    let max = tektite_controller::metrics::MAX_ENVIRONMENTS;
    assert_eq!(counted.len(), max + 2, "{text}");
    assert!(
        text.contains(r#"tektite_deployments_total{environment="prod",status="succeeded"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tektite_deployments_total{environment="prod",status="failed"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tektite_deployments_total{environment="env-18",status="succeeded"} 1"#),
        "{text}"
    );
    assert!(!text.contains("env-19"), "{text}");
    assert!(
        text.contains(r#"tektite_deployments_total{environment="_other",status="succeeded"} 6"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tektite_deployment_lead_time_seconds_count{environment="prod"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains("tektite_recovery_time_seconds_count{"),
        "{text}"
    );
}
