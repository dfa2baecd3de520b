//! Prometheus metrics under Tekton's names, so existing dashboards and
//! alerts keep working, plus the controller's own reconcile metrics; and the
//! HTTP endpoints `/metrics`, `/healthz` and `/readyz`.
//!
//! Label cardinality is bounded: no run or pod names, ever. At the default
//! levels a PipelineRun's metrics carry `namespace` and `pipeline`, a
//! TaskRun's `namespace` and `task`; at the `namespace` level only the
//! namespace (Tekton's `metrics.pipelinerun.level` / `metrics.taskrun.level`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tektite_api::v1::{Condition, PipelineRun, TaskRun};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Labels = Vec<(String, String)>;

/// Running and queued PipelineRuns per (namespace, concurrency key).
pub type QueueCounts = std::collections::BTreeMap<(String, String), (usize, usize)>;

/// The most concurrency keys the queue gauges label one by one.
pub const MAX_KEYS: usize = 50;

/// The most environments the deployment metrics label one by one (the
/// label is user data); later ones are counted under `_other`.
pub const MAX_ENVIRONMENTS: usize = 20;

/// Lead and restore times, in seconds (a minute to a week).
const DORA_BUCKETS: [f64; 12] = [
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172_800.0, 345_600.0,
    604_800.0,
];

fn dora_histogram() -> Histogram {
    Histogram::new(DORA_BUCKETS)
}

/// Tekton's duration buckets, in seconds (10 s to a day).
const DURATION_BUCKETS: [f64; 12] = [
    10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 5400.0, 10800.0, 21600.0, 43200.0, 86400.0,
];

/// How much a run's metrics say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Namespace and Pipeline/Task name (the default).
    Name,
    /// Namespace only.
    Namespace,
}

fn histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn reconcile_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Every metric the controller exports.
#[allow(missing_debug_implementations)] // the registry is not Debug
pub struct Metrics {
    registry: Registry,
    pipelinerun_level: Level,
    taskrun_level: Level,
    pipelinerun_duration: Family<Labels, Histogram, fn() -> Histogram>,
    pipelinerun_taskrun_duration: Family<Labels, Histogram, fn() -> Histogram>,
    taskrun_duration: Family<Labels, Histogram, fn() -> Histogram>,
    pipelinerun_total: Family<Labels, Counter>,
    taskrun_total: Family<Labels, Counter>,
    running_pipelineruns: Gauge,
    running_taskruns: Gauge,
    pod_latency: Family<Labels, Gauge<i64, AtomicI64>>,
    reconcile_total: Family<Labels, Counter>,
    reconcile_errors: Family<Labels, Counter>,
    reconcile_duration: Family<Labels, Histogram, fn() -> Histogram>,
    log_archived_bytes: Counter,
    log_archive_failures: Counter,
    log_archive_lag: Histogram,
    logs_followed: Gauge,
    queue_wait: Histogram,
    concurrency_running: Family<Labels, Gauge>,
    concurrency_queued: Family<Labels, Gauge>,
    deployments: Family<Labels, Counter>,
    lead_time: Family<Labels, Histogram, fn() -> Histogram>,
    recovery_time: Family<Labels, Histogram, fn() -> Histogram>,
    /// The environments labelled so far (at most [`MAX_ENVIRONMENTS`]).
    environments: Mutex<HashSet<String>>,
    /// The runs whose end was counted: a reconcile that works from a cache
    /// older than its last status write plans the same end again.
    ended: Mutex<tektite_engine::recent::Recent<String>>,
}

impl Metrics {
    /// The metrics, registered, at the given label levels.
    pub fn new(pipelinerun_level: Level, taskrun_level: Level) -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            pipelinerun_level,
            taskrun_level,
            pipelinerun_duration: Family::new_with_constructor(histogram),
            pipelinerun_taskrun_duration: Family::new_with_constructor(histogram),
            taskrun_duration: Family::new_with_constructor(histogram),
            pipelinerun_total: Family::default(),
            taskrun_total: Family::default(),
            running_pipelineruns: Gauge::default(),
            running_taskruns: Gauge::default(),
            pod_latency: Family::default(),
            reconcile_total: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            log_archived_bytes: Counter::default(),
            log_archive_failures: Counter::default(),
            log_archive_lag: Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]),
            logs_followed: Gauge::default(),
            queue_wait: histogram(),
            concurrency_running: Family::default(),
            concurrency_queued: Family::default(),
            deployments: Family::default(),
            lead_time: Family::new_with_constructor(dora_histogram),
            recovery_time: Family::new_with_constructor(dora_histogram),
            environments: Mutex::default(),
            ended: Mutex::default(),
        };
        let t = "tekton_pipelines_controller_";
        registry.register(
            format!("{t}pipelinerun_duration_seconds"),
            "The pipelinerun execution time in seconds",
            m.pipelinerun_duration.clone(),
        );
        registry.register(
            format!("{t}pipelinerun_taskrun_duration_seconds"),
            "The pipelinerun's taskrun execution time in seconds",
            m.pipelinerun_taskrun_duration.clone(),
        );
        registry.register(
            format!("{t}taskrun_duration_seconds"),
            "The taskrun's execution time in seconds",
            m.taskrun_duration.clone(),
        );
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            format!("{t}pipelinerun"),
            "Number of pipelineruns",
            m.pipelinerun_total.clone(),
        );
        registry.register(
            format!("{t}taskrun"),
            "Number of taskruns",
            m.taskrun_total.clone(),
        );
        registry.register(
            format!("{t}running_pipelineruns"),
            "Number of pipelineruns executing currently",
            m.running_pipelineruns.clone(),
        );
        registry.register(
            format!("{t}running_taskruns"),
            "Number of taskruns executing currently",
            m.running_taskruns.clone(),
        );
        registry.register(
            format!("{t}taskruns_pod_latency_milliseconds"),
            "Time from a taskrun's creation to the creation of its pod, in milliseconds (the last observed)",
            m.pod_latency.clone(),
        );
        registry.register(
            "tektite_controller_reconcile",
            "Reconciles, by kind and result",
            m.reconcile_total.clone(),
        );
        registry.register(
            "tektite_controller_reconcile_errors",
            "Reconciles that failed, by kind and error",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "tektite_controller_reconcile_duration_seconds",
            "Time a reconcile takes, API calls included",
            m.reconcile_duration.clone(),
        );
        m.register_logs(&mut registry);
        m.register_queues(&mut registry);
        m.register_dora(&mut registry);
        Metrics { registry, ..m }
    }

    /// Registers the deployment metrics (DORA).
    fn register_dora(&self, registry: &mut Registry) {
        registry.register(
            "tektite_deployments",
            "Finished deployments (PipelineRuns labelled tektite.dev/environment; cancelled ones are not), by environment and status (succeeded, failed)",
            self.deployments.clone(),
        );
        registry.register(
            "tektite_deployment_lead_time_seconds",
            "Time from a change's commit (the PipelineRun's commit-time result) to its successful deployment, by environment",
            self.lead_time.clone(),
        );
        registry.register(
            "tektite_recovery_time_seconds",
            "Time from a failed deployment (the first of those in a row) to the next successful deployment to the same environment, by environment",
            self.recovery_time.clone(),
        );
    }

    /// A deployment just finished (`tektite_engine::dora`), having
    /// restored its environment after `restored_after` seconds if it did;
    /// one already counted is not again.
    pub fn deployment_done(
        &self,
        meta: &ObjectMeta,
        d: &tektite_engine::dora::Deployment,
        restored_after: Option<i64>,
    ) {
        if !self.first_end("Deployment", meta) {
            return;
        }
        let env = self.environment_label(&d.environment);
        let status = if d.succeeded { "succeeded" } else { "failed" };
        self.deployments
            .get_or_create(&vec![
                ("environment".into(), env.clone()),
                ("status".into(), status.into()),
            ])
            .inc();
        if !d.succeeded {
            return;
        }
        let l = vec![("environment".into(), env)];
        if let Some(c) = d.committed {
            let lead = (d.finished - c).max(0) as f64;
            self.lead_time.get_or_create(&l).observe(lead);
        }
        if let Some(r) = restored_after {
            self.recovery_time
                .get_or_create(&l)
                .observe(r.max(0) as f64);
        }
    }

    /// `env` as a label value: itself while fewer than
    /// [`MAX_ENVIRONMENTS`] have been seen, else `_other`.
    fn environment_label(&self, env: &str) -> String {
        let mut seen = self
            .environments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(env) || seen.len() < MAX_ENVIRONMENTS && seen.insert(env.to_string()) {
            env.to_string()
        } else {
            "_other".to_string()
        }
    }

    /// Registers the log archive's metrics.
    fn register_logs(&self, registry: &mut Registry) {
        registry.register(
            "tektite_log_archived_bytes",
            "Bytes of step and sidecar logs written to the log archive",
            self.log_archived_bytes.clone(),
        );
        registry.register(
            "tektite_log_archive_failures",
            "Log archive reads or writes that failed (each is retried)",
            self.log_archive_failures.clone(),
        );
        registry.register(
            "tektite_log_archive_lag_seconds",
            "Time from a log byte read from the API server to its part written to the archive (the oldest byte of each part)",
            self.log_archive_lag.clone(),
        );
        registry.register(
            "tektite_log_archive_containers",
            "Containers whose logs are being followed into the archive",
            self.logs_followed.clone(),
        );
    }

    /// Registers the concurrency control's metrics.
    fn register_queues(&self, registry: &mut Registry) {
        registry.register(
            "tektite_pipelinerun_queue_wait_seconds",
            "Time from a PipelineRun's creation to its admission under a concurrency key or the namespace's cap",
            self.queue_wait.clone(),
        );
        registry.register(
            "tektite_concurrency_running",
            "PipelineRuns holding a place of a concurrency key, by namespace and key (at most 50 keys; the rest under key \"_other\")",
            self.concurrency_running.clone(),
        );
        registry.register(
            "tektite_concurrency_queued",
            "PipelineRuns waiting for a concurrency key, by namespace and key (at most 50 keys; the rest under key \"_other\")",
            self.concurrency_queued.clone(),
        );
    }

    /// A run was admitted `seconds` after its creation.
    pub fn queue_waited(&self, seconds: f64) {
        self.queue_wait.observe(seconds);
    }

    /// Running and queued runs per (namespace, key). Keys are user data:
    /// the [`MAX_KEYS`] busiest are labelled, the others summed under
    /// namespace and key `_other`.
    pub fn set_queues(
        &self,
        counts: &std::collections::BTreeMap<(String, String), (usize, usize)>,
    ) {
        let mut busiest: Vec<_> = counts.iter().collect();
        busiest.sort_by_key(|(k, (r, q))| (std::cmp::Reverse(r + q), (*k).clone()));
        self.concurrency_running.clear();
        self.concurrency_queued.clear();
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let mut other = (0usize, 0usize);
        for (i, ((ns, key), (r, q))) in busiest.into_iter().enumerate() {
            if i >= MAX_KEYS {
                other.0 += r;
                other.1 += q;
                continue;
            }
            let l = vec![
                ("namespace".to_string(), ns.clone()),
                ("key".to_string(), key.clone()),
            ];
            self.concurrency_running.get_or_create(&l).set(gauge(*r));
            self.concurrency_queued.get_or_create(&l).set(gauge(*q));
        }
        if counts.len() > MAX_KEYS {
            let l = vec![
                ("namespace".to_string(), "_other".to_string()),
                ("key".to_string(), "_other".to_string()),
            ];
            self.concurrency_running
                .get_or_create(&l)
                .set(gauge(other.0));
            self.concurrency_queued
                .get_or_create(&l)
                .set(gauge(other.1));
        }
    }

    /// `bytes` archived, the oldest of them read `lag` ago.
    pub fn logs_archived(&self, bytes: usize, lag: Duration) {
        self.log_archived_bytes.inc_by(bytes as u64);
        self.log_archive_lag.observe(lag.as_secs_f64());
    }

    /// An archive read or write failed.
    pub fn log_archive_failed(&self) {
        self.log_archive_failures.inc();
    }

    /// How many containers are followed now.
    pub fn set_logs_followed(&self, n: usize) {
        self.logs_followed.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn pipelinerun_labels(&self, pr: &PipelineRun) -> Labels {
        let name = pr.spec.pipeline_ref.as_ref().and_then(|r| r.name.clone());
        labels(
            pr.metadata.namespace.clone(),
            self.pipelinerun_level,
            "pipeline",
            name,
        )
    }

    fn taskrun_labels(&self, tr: &TaskRun) -> Labels {
        let name = tr.spec.task_ref.as_ref().and_then(|r| r.name.clone());
        labels(
            tr.metadata.namespace.clone(),
            self.taskrun_level,
            "task",
            name,
        )
    }

    /// A PipelineRun just finished with `conditions`; a run already counted
    /// (a reconcile from a stale cache writing its end again) is not again.
    pub fn pipelinerun_done(&self, pr: &PipelineRun, conditions: &[Condition], seconds: f64) {
        if !self.first_end("PipelineRun", &pr.metadata) {
            return;
        }
        let status = outcome(conditions, "Cancelled");
        let mut l = self.pipelinerun_labels(pr);
        l.push(("status".into(), status.into()));
        self.pipelinerun_duration.get_or_create(&l).observe(seconds);
        self.pipelinerun_total
            .get_or_create(&vec![("status".into(), status.into())])
            .inc();
    }

    /// A TaskRun just finished with `conditions`; a PipelineRun's TaskRun
    /// also counts under `pipelinerun_taskrun_duration_seconds`.
    pub fn taskrun_done(&self, tr: &TaskRun, conditions: &[Condition], seconds: f64) {
        if !self.first_end("TaskRun", &tr.metadata) {
            return;
        }
        let status = outcome(conditions, "TaskRunCancelled");
        let mut l = self.taskrun_labels(tr);
        l.push(("status".into(), status.into()));
        self.taskrun_duration.get_or_create(&l).observe(seconds);
        let pipeline = tr
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("tekton.dev/pipeline"))
            .cloned();
        if let Some(p) = pipeline {
            let mut l = labels(
                tr.metadata.namespace.clone(),
                self.pipelinerun_level,
                "pipeline",
                Some(p),
            );
            // The task label, if its level keeps it (after the namespace).
            l.extend(self.taskrun_labels(tr).into_iter().skip(1));
            l.push(("status".into(), status.into()));
            self.pipelinerun_taskrun_duration
                .get_or_create(&l)
                .observe(seconds);
        }
        self.taskrun_total
            .get_or_create(&vec![("status".into(), status.into())])
            .inc();
    }

    /// Whether this is the first end recorded of the run, by its UID (else
    /// namespace and name).
    fn first_end(&self, kind: &str, meta: &ObjectMeta) -> bool {
        let id = match &meta.uid {
            Some(uid) => format!("{kind}/{uid}"),
            None => format!(
                "{kind}/{}/{}",
                meta.namespace.as_deref().unwrap_or(""),
                meta.name.as_deref().unwrap_or("")
            ),
        };
        self.ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .first(id)
    }

    /// The controller created `tr`'s pod `latency` after the TaskRun.
    pub fn pod_created(&self, tr: &TaskRun, latency: Duration) {
        let ms = i64::try_from(latency.as_millis()).unwrap_or(i64::MAX);
        self.pod_latency
            .get_or_create(&self.taskrun_labels(tr))
            .set(ms);
    }

    /// Runs executing now (counted from the controller's caches).
    pub fn set_running(&self, taskruns: usize, pipelineruns: usize) {
        self.running_taskruns
            .set(i64::try_from(taskruns).unwrap_or(i64::MAX));
        self.running_pipelineruns
            .set(i64::try_from(pipelineruns).unwrap_or(i64::MAX));
    }

    /// One reconcile of `kind` ended: `error` names the failure's kind.
    pub fn reconciled(&self, kind: &str, error: Option<&str>, took: Duration) {
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconcile_total
            .get_or_create(&vec![
                ("kind".into(), kind.into()),
                ("result".into(), result.into()),
            ])
            .inc();
        if let Some(e) = error {
            self.reconcile_errors
                .get_or_create(&vec![
                    ("kind".into(), kind.into()),
                    ("error".into(), e.into()),
                ])
                .inc();
        }
        self.reconcile_duration
            .get_or_create(&vec![("kind".into(), kind.into())])
            .observe(took.as_secs_f64());
    }

    /// Prometheus' text format (0.0.4), which every scraper and `promtool`
    /// read: the OpenMetrics text the encoder writes, with counters' HELP and
    /// TYPE under their `_total` names and no `# EOF`.
    pub fn render(&self) -> String {
        let mut open = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut open, &self.registry);
        let counters: Vec<&str> = open
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line == "# EOF" {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
                let rest = line.strip_prefix(p)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(&name)
                    .then(|| format!("{p}{name}_total {tail}"))
            });
            out.push_str(renamed.as_deref().unwrap_or(line));
            out.push('\n');
        }
        out
    }
}

/// `namespace`, and at the name level `key` (the Pipeline's or Task's name,
/// `anonymous` for an embedded spec).
fn labels(namespace: Option<String>, level: Level, key: &str, name: Option<String>) -> Labels {
    let mut l = vec![("namespace".to_string(), namespace.unwrap_or_default())];
    if level == Level::Name {
        l.push((key.to_string(), name.unwrap_or_else(|| "anonymous".into())));
    }
    l
}

/// Tekton's `status` label: `success`, `cancelled` or `failed`.
fn outcome(conditions: &[Condition], cancelled_reason: &str) -> &'static str {
    match conditions.iter().find(|c| c.type_ == "Succeeded") {
        Some(c) if c.status == "True" => "success",
        Some(c) if c.reason.as_deref() == Some(cancelled_reason) => "cancelled",
        _ => "failed",
    }
}

/// Serves `/metrics` (rendered by `metrics`, after `refresh`), `/healthz`
/// (200 while the process runs) and `/readyz` (200 once `ready` is set) on
/// `listener`, until the process ends. One request per connection.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    refresh: Arc<dyn Fn() + Send + Sync>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        let refresh = refresh.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let mut words = head.split_whitespace();
            let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let (code, kind, body) = match (method, path) {
                ("GET", "/metrics") => {
                    refresh();
                    (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        metrics.render(),
                    )
                }
                ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
                ("GET", "/readyz") if ready.load(Ordering::Relaxed) => {
                    ("200 OK", "text/plain", "ready\n".to_string())
                }
                ("GET", "/readyz") => (
                    "503 Service Unavailable",
                    "text/plain",
                    "caches not synced yet\n".to_string(),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {code}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
