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
    rules_use_exported(
        "alerts.yaml",
        &[
            "tekton_pipelines_controller_pipelinerun_total",
            "tekton_pipelines_controller_taskruns_pod_latency_milliseconds",
            "tektite_controller_reconcile_errors_total",
            "tektite_log_archive_failures_total",
        ],
    );
}

/// `file` of `controller/config/prometheus/` uses each of `names`, and the
/// controller exports each.
fn rules_use_exported(file: &str, names: &[&str]) {
    let rules = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../config/prometheus")
            .join(file),
    )
    .unwrap();
    let text = recorded(Level::Name).render();
    for name in names {
        assert!(rules.contains(name), "{file} does not use {name}");
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
    rules_use_exported(
        "dora.yaml",
        &[
            "tektite_deployments_total",
            "tektite_deployment_lead_time_seconds_bucket",
            "tektite_recovery_time_seconds_sum",
            "tektite_recovery_time_seconds_count",
        ],
    );
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

/// The Grafana dashboards in `controller/config/grafana/`: importable (JSON,
/// unique panel ids, a Prometheus `datasource` variable, panels on the grid)
/// and every query valid PromQL once Grafana's variables have values
/// (`promtool check rules` on them as recording rules), naming only series
/// the controller exports (with their labels), the recording rules of
/// `controller/config/prometheus/` or `ALERTS`. See docs/dashboards.md.
mod grafana {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    use serde_json::{Value, json};
    use tektite_controller::metrics::Level;

    use super::{promtool, recorded};

    const DASHBOARDS: [&str; 2] = ["tektite-pipelines.json", "tektite-dora.json"];

    fn config(path: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../config")
            .join(path)
    }

    fn dashboard(name: &str) -> Value {
        let path = config(&format!("grafana/{name}"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not valid JSON: {e}", path.display()))
    }

    /// Every panel, those inside collapsed rows included.
    fn panels(d: &Value) -> Vec<&Value> {
        let mut out = Vec::new();
        for p in d["panels"].as_array().into_iter().flatten() {
            out.push(p);
            out.extend(p["panels"].as_array().into_iter().flatten());
        }
        out
    }

    /// One panel target's query, as a recording rule named after its place.
    #[derive(Debug)]
    struct Query {
        /// `file: panel "title" (id N), target A`, for messages.
        place: String,
        /// `grafana:<dashboard>:panel_<id>_<refId>`.
        rule: String,
        expr: String,
    }

    /// The queries of dashboard `name`, Grafana's variables substituted.
    fn queries(name: &str, d: &Value) -> Vec<Query> {
        let vars = variables(d);
        let stem = name.trim_end_matches(".json").replace('-', "_");
        let mut out = Vec::new();
        for p in panels(d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let (id, r) = (&p["id"], t["refId"].as_str().unwrap_or("?"));
                let place = format!("{name}: panel {} (id {id}), target {r}", p["title"]);
                let raw = t["expr"].as_str().unwrap_or_default();
                let expr = substitute(raw, &vars).unwrap_or_else(|e| panic!("{place}: {e}"));
                out.push(Query {
                    rule: format!("grafana:{stem}:panel_{id}_{r}"),
                    place,
                    expr,
                });
            }
        }
        out
    }

    /// The values Grafana gives its variables when it sends a query: the
    /// built-in intervals and ranges as durations, the dashboard's own
    /// variables a value (two alternatives for a multi-value one, as the
    /// regex Grafana makes of them).
    fn variables(d: &Value) -> BTreeMap<String, String> {
        let mut vars: BTreeMap<String, String> = [
            ("__rate_interval", "4m"),
            ("__interval", "1m"),
            ("__interval_ms", "60000"),
            ("__range", "1d"),
            ("__range_s", "86400"),
            ("__range_ms", "86400000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or_default().to_string();
            let value = match v["type"].as_str() {
                Some("datasource") => "prometheus".to_string(),
                Some("interval") => "5m".to_string(),
                _ if v["multi"] == true || v["includeAll"] == true => {
                    format!("{name}-a|{name}-b")
                }
                _ => format!("{name}-a"),
            };
            vars.insert(name, value);
        }
        vars
    }

    /// `expr` with its `$name`, `${name}`, `${name:format}` and `[[name]]`
    /// replaced from `vars`; an unknown variable is an error.
    fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let mut out = String::new();
        let mut rest = expr;
        loop {
            let Some(at) = rest.find(['$', '[']) else {
                out.push_str(rest);
                return Ok(out);
            };
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            let (name, len) = if let Some(braced) = tail.strip_prefix("${") {
                let end = braced
                    .find('}')
                    .ok_or(format!("unclosed ${{ in {expr:?}"))?;
                let inner = &braced[..end];
                (inner.split(':').next().unwrap_or(inner), end + 3)
            } else if let Some(old) = tail.strip_prefix("[[") {
                let end = old.find("]]").ok_or(format!("unclosed [[ in {expr:?}"))?;
                let inner = &old[..end];
                (inner.split(':').next().unwrap_or(inner), end + 4)
            } else if let Some(plain) = tail.strip_prefix('$') {
                let end = plain.find(|c| !word(c)).unwrap_or(plain.len());
                (&plain[..end], end + 1)
            } else {
                // A range's `[`.
                out.push('[');
                rest = &tail[1..];
                continue;
            };
            let value = vars
                .get(name)
                .ok_or(format!("unknown Grafana variable {name:?} in {expr:?}"))?;
            out.push_str(value);
            rest = &tail[len..];
        }
    }

    /// Aggregations, operators and modifiers: words of PromQL that are not
    /// metric names.
    const KEYWORDS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    ];

    /// The words before a list of label names in parentheses.
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];

    /// The index after the string literal opened at `chars[i]`.
    fn skip_string(chars: &[char], mut i: usize) -> usize {
        let quote = chars[i];
        i += 1;
        while i < chars.len() && chars[i] != quote {
            i += if chars[i] == '\\' && quote != '`' {
                2
            } else {
                1
            };
        }
        i + 1
    }

    /// The label names of the matchers in the braces opened at `chars[open]`,
    /// and the index after the closing brace.
    fn matchers(chars: &[char], open: usize) -> (Vec<String>, usize) {
        let mut labels = Vec::new();
        let mut i = open + 1;
        while i < chars.len() && chars[i] != '}' {
            let c = chars[i];
            if matches!(c, '"' | '\'' | '`') {
                i = skip_string(chars, i);
            } else if c.is_ascii_alphabetic() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                labels.push(chars[start..i].iter().collect());
            } else {
                i += 1;
            }
        }
        (labels, i + 1)
    }

    /// The series selectors of a valid PromQL `expr`: each metric name (empty
    /// for a selector without one) with the labels its matchers name.
    fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
        let chars: Vec<char> = expr.chars().collect();
        let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if matches!(c, '"' | '\'' | '`') {
                i = skip_string(&chars, i);
            } else if c == '[' {
                // A range or subquery: durations only.
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
            } else if c == '{' {
                let (labels, end) = matchers(&chars, i);
                out.push((String::new(), labels));
                i = end;
            } else if c.is_ascii_digit() || c == '.' {
                // A number or a duration (`offset 5m`).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
                let start = i;
                while i < chars.len() && name_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let paren = chars.get(next) == Some(&'(');
                if GROUPING.contains(&word.as_str()) && paren {
                    // Label names, not metrics.
                    while i < chars.len() && chars[i] != ')' {
                        i += 1;
                    }
                    i += 1;
                } else if !paren && !KEYWORDS.contains(&word.as_str()) {
                    let mut labels = Vec::new();
                    if chars.get(next) == Some(&'{') {
                        (labels, i) = matchers(&chars, next);
                    }
                    out.push((word, labels));
                }
            } else {
                i += 1;
            }
        }
        out
    }

    /// What a query may name.
    #[derive(Debug)]
    struct Known {
        /// The series the controller exports (a histogram as its `_bucket`,
        /// `_sum` and `_count`, a counter under its `_total` name), each
        /// with the labels it carries at the default level plus the `job`
        /// and `instance` a scrape adds.
        exported: BTreeMap<String, BTreeSet<String>>,
        /// The recording rules' names and `ALERTS`: labels not checked.
        other: BTreeSet<String>,
    }

    fn known() -> Known {
        let text = recorded(Level::Name).render();
        let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let scrape: BTreeSet<String> = ["job".to_string(), "instance".to_string()].into();
        for line in text.lines() {
            if let Some(typed) = line.strip_prefix("# TYPE ") {
                let (name, kind) = typed.split_once(' ').unwrap();
                let series = match kind {
                    "histogram" => vec![
                        format!("{name}_bucket"),
                        format!("{name}_sum"),
                        format!("{name}_count"),
                    ],
                    _ => vec![name.to_string()],
                };
                for s in series {
                    exported.entry(s).or_insert_with(|| scrape.clone());
                }
            } else if let Some((name, _)) = line.split_once('{')
                && let Some(labels) = exported.get_mut(name)
            {
                // Label values here have no `,` or `}`.
                let pairs = line[name.len() + 1..].split('}').next().unwrap_or_default();
                labels.extend(
                    pairs
                        .split(',')
                        .filter_map(|p| Some(p.split_once('=')?.0.to_string())),
                );
            }
        }
        let mut other: BTreeSet<String> = ["ALERTS".to_string()].into();
        let dir = config("prometheus");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            if !file.ends_with(".yaml") || file.ends_with("_test.yaml") {
                continue;
            }
            let rules = std::fs::read_to_string(&path).unwrap();
            other.extend(rules.lines().filter_map(|l| {
                let l = l.trim_start().trim_start_matches("- ");
                Some(l.strip_prefix("record:")?.trim().to_string())
            }));
        }
        assert!(
            other.contains("environment:tektite_deployments:per_day"),
            "no recording rules read from {}: {other:?}",
            dir.display()
        );
        Known { exported, other }
    }

    /// What is wrong with `queries`: promtool's objections to them as
    /// recording rules, then the metrics and labels they name that nothing
    /// exports or records.
    fn problems(queries: &[Query], known: &Known) -> Vec<String> {
        let mut out = Vec::new();
        let rules: Vec<Value> = queries
            .iter()
            .map(|q| json!({"record": q.rule, "expr": q.expr}))
            .collect();
        let file = tempfile::Builder::new()
            .prefix("grafana-queries")
            .suffix(".yaml")
            .tempfile()
            .unwrap();
        // JSON is YAML.
        let doc = json!({"groups": [{"name": "grafana-dashboards", "rules": rules}]});
        std::fs::write(file.path(), serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        let (ok, text) = promtool(&["check", "rules", file.path().to_str().unwrap()], None);
        if !ok {
            let named: Vec<String> = queries
                .iter()
                .filter(|q| text.contains(&q.rule))
                .map(|q| format!("{}: {}", q.place, q.expr))
                .collect();
            out.push(format!(
                "promtool check rules: {text}\nin:\n{}",
                named.join("\n")
            ));
        }
        for q in queries {
            let found = selectors(&q.expr);
            if found.is_empty() {
                out.push(format!("{}: names no metric: {}", q.place, q.expr));
            }
            for (name, labels) in found {
                if let Some(have) = known.exported.get(&name) {
                    for l in labels.iter().filter(|l| !have.contains(*l)) {
                        out.push(format!(
                            "{}: {name} has no label {l:?} (it has {have:?}): {}",
                            q.place, q.expr
                        ));
                    }
                } else if !known.other.contains(&name) {
                    out.push(format!(
                        "{}: {name:?} is neither exported by the controller nor a recording rule: {}",
                        q.place, q.expr
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn dashboards_are_importable() {
        let mut uids = BTreeSet::new();
        for name in DASHBOARDS {
            let d = dashboard(name);
            let schema = d["schemaVersion"].as_u64().unwrap_or(0);
            assert!(
                (36..=41).contains(&schema),
                "{name}: schemaVersion {schema}"
            );
            let uid = d["uid"].as_str().unwrap_or_default();
            assert!(
                !uid.is_empty() && uids.insert(uid.to_string()),
                "{name}: uid {uid:?}"
            );
            assert!(
                d["title"].as_str().is_some_and(|t| !t.is_empty()),
                "{name}: no title"
            );
            let vars = d["templating"]["list"].as_array().unwrap();
            assert!(
                vars.iter().any(|v| v["name"] == "datasource"
                    && v["type"] == "datasource"
                    && v["query"] == "prometheus"),
                "{name}: no datasource variable of type prometheus"
            );
            let mut ids = BTreeSet::new();
            let mut cells = BTreeMap::new();
            for p in panels(&d) {
                let id = p["id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{name}: a panel without an id: {p}"));
                assert!(ids.insert(id), "{name}: panel id {id} twice");
                let title = p["title"].as_str().unwrap_or_default();
                let g = &p["gridPos"];
                let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
                    g[k].as_u64()
                        .unwrap_or_else(|| panic!("{name}: panel {id}: gridPos.{k}"))
                });
                assert!(
                    w >= 1 && h >= 1 && x + w <= 24,
                    "{name}: panel {id}: gridPos {g}"
                );
                for cx in x..x + w {
                    for cy in y..y + h {
                        if let Some(other) = cells.insert((cx, cy), id) {
                            panic!("{name}: panels {other} and {id} overlap at ({cx}, {cy})");
                        }
                    }
                }
                if p["type"] == "row" {
                    continue;
                }
                assert!(!title.is_empty(), "{name}: panel {id} has no title");
                assert!(
                    p["description"].as_str().is_some_and(|t| !t.is_empty()),
                    "{name}: panel {title:?} has no description"
                );
                assert_eq!(
                    p["datasource"]["uid"], "${datasource}",
                    "{name}: panel {title:?}"
                );
                assert!(
                    p["fieldConfig"]["defaults"]["unit"].is_string(),
                    "{name}: panel {title:?} has no unit"
                );
                let targets = p["targets"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{name}: panel {title:?} has no targets"));
                let refs: BTreeSet<&str> =
                    targets.iter().filter_map(|t| t["refId"].as_str()).collect();
                assert_eq!(refs.len(), targets.len(), "{name}: panel {title:?}: refIds");
                for t in targets {
                    assert_eq!(
                        t["datasource"]["uid"], "${datasource}",
                        "{name}: panel {title:?}"
                    );
                    assert!(
                        t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                        "{name}: panel {title:?}: empty expr"
                    );
                }
            }
        }
    }

    /// The thresholds that say what the issue asked for: the alert's 3
    /// failed runs, and DORA's elite levels.
    #[test]
    fn thresholds_match_the_alert_and_doras_elite_levels() {
        let steps = |p: &Value| -> Vec<f64> {
            p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["value"].as_f64())
                .collect()
        };
        let alerts = std::fs::read_to_string(config("prometheus/alerts.yaml")).unwrap();
        assert!(
            alerts.contains(r#"increase(tekton_pipelines_controller_pipelinerun_total{status="failed"}[1h])) > 3"#),
            "the PipelineRunsFailing alert changed: update the pipelines dashboard"
        );
        let d = dashboard("tektite-pipelines.json");
        let alert = panels(&d)
            .into_iter()
            .find(|p| {
                p["targets"].as_array().into_iter().flatten().any(|t| {
                    t["expr"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(r#"ALERTS{alertname="PipelineRunsFailing"}"#)
                })
            })
            .expect("no panel shows ALERTS{alertname=\"PipelineRunsFailing\"}");
        assert_eq!(steps(alert), [3.0], "{}", alert["title"]);
        assert_ne!(
            alert["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"],
            "off"
        );
        let d = dashboard("tektite-dora.json");
        for (rule, elite) in [
            ("environment:tektite_deployments:per_day", 50.0),
            (
                "environment:tektite_deployment_lead_time_seconds:p50_7d",
                7200.0,
            ),
            ("environment:tektite_change_failure_rate:ratio_7d", 0.15),
            ("environment:tektite_recovery_time_seconds:mean_7d", 3600.0),
        ] {
            let stat = panels(&d)
                .into_iter()
                .find(|p| {
                    p["type"] == "stat"
                        && p["targets"][0]["expr"]
                            .as_str()
                            .unwrap_or_default()
                            .starts_with(rule)
                })
                .unwrap_or_else(|| panic!("no stat panel on {rule}"));
            assert!(
                steps(stat).contains(&elite),
                "{}: no threshold at {elite}",
                stat["title"]
            );
        }
        let env = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "environment")
            .expect("no environment variable");
        assert_eq!(
            env["definition"],
            "label_values(tektite_deployments_total, environment)"
        );
    }

    #[test]
    fn queries_are_valid_promql_on_exported_names() {
        let known = known();
        let mut all = Vec::new();
        for name in DASHBOARDS {
            let d = dashboard(name);
            let qs = queries(name, &d);
            assert!(qs.len() >= 10, "{name}: {} queries", qs.len());
            all.extend(qs);
            // A variable's label_values(metric, label) names an exported
            // series and one of its labels.
            for v in d["templating"]["list"].as_array().unwrap() {
                let Some(def) = v["definition"].as_str() else {
                    continue;
                };
                let args = def
                    .strip_prefix("label_values(")
                    .and_then(|a| a.strip_suffix(')'))
                    .unwrap_or_else(|| panic!("{name}: variable {}: {def}", v["name"]));
                let (metric, label) = args.split_once(',').unwrap();
                let labels = known
                    .exported
                    .get(metric.trim())
                    .unwrap_or_else(|| panic!("{name}: {def}: not exported"));
                assert!(
                    labels.contains(label.trim()),
                    "{name}: {def}: no such label ({labels:?})"
                );
            }
        }
        let found = problems(&all, &known);
        assert!(found.is_empty(), "{}", found.join("\n"));
    }

    /// The checker above catches what it is for: a syntax error (promtool,
    /// naming the panel), a metric nobody exports, a label the metric does
    /// not have, and a variable Grafana would not know.
    #[test]
    fn the_query_checker_catches_broken_queries() {
        let known = known();
        let q = |id: u32, expr: &str| Query {
            place: format!("test: panel {id}"),
            rule: format!("grafana:test:panel_{id}_A"),
            expr: expr.to_string(),
        };
        let good = q(
            1,
            r#"sum by (status) (rate(tekton_pipelines_controller_pipelinerun_total{job="x"}[5m]))"#,
        );
        assert!(problems(&[good], &known).is_empty());
        let broken = problems(
            &[
                q(1, "sum(rate(tektite_controller_reconcile_total[5m])"),
                q(2, "tektite_deployments_total"),
            ],
            &known,
        );
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert!(broken[0].starts_with("promtool check rules"), "{broken:?}");
        assert!(broken[0].contains("test: panel 1"), "{broken:?}");
        for (expr, expected) in [
            (
                "rate(tekton_pipelines_controller_pipelinerun_count[5m])",
                r#""tekton_pipelines_controller_pipelinerun_count" is neither exported"#,
            ),
            (
                // The histogram itself is not a series; its parts are.
                "tektite_pipelinerun_queue_wait_seconds",
                r#""tektite_pipelinerun_queue_wait_seconds" is neither exported"#,
            ),
            (
                r#"sum(increase(tekton_pipelines_controller_pipelinerun_total{namespace="ci"}[1h]))"#,
                r#"tekton_pipelines_controller_pipelinerun_total has no label "namespace""#,
            ),
            ("vector(1)", "names no metric"),
            (
                r#"histogram_quantile(0.5, sum by (le) (rate(tekton_pipelines_controller_taskrun_duration_seconds_bucket{pipeline="x"}[5m])))"#,
                r#"has no label "pipeline""#,
            ),
        ] {
            let found = problems(&[q(3, expr)], &known);
            assert!(
                found.len() == 1 && found[0].contains(expected),
                "{expr}: {found:?}"
            );
        }
        // Grafana's variables in all their forms, and an unknown one.
        let d = json!({"templating": {"list": [
            {"name": "environment", "type": "query", "multi": true},
            {"name": "datasource", "type": "datasource"}]}});
        let vars = variables(&d);
        assert_eq!(
            substitute(
                r#"sum(rate(x{e=~"$environment", f=~"${environment:regex}"}[$__rate_interval])) [[__interval]] ${__range}"#,
                &vars
            )
            .unwrap(),
            r#"sum(rate(x{e=~"environment-a|environment-b", f=~"environment-a|environment-b"}[4m])) 1m 1d"#
        );
        let err = substitute(r#"up{cluster="$cluster"}"#, &vars).unwrap_err();
        assert!(
            err.contains(r#"unknown Grafana variable "cluster""#),
            "{err}"
        );
    }
}
