//! Concurrency control under load: 1,000 PipelineRuns (`BENCH_RUNS`) over
//! 50 keys (`BENCH_KEYS`) with limit 2, drained, as the controller decides
//! them: from its PipelineRun cache (a real `reflector::Store`, fed as its
//! watch would be), one decision per reconcile of a queued run
//! (`Queue::decision`), and on each end the runs it wakes
//! (`Queue::to_wake`), each reconciled in turn.
//!
//! Baseline, in the same run: the same runs without keys, where a
//! reconcile only finds that no key applies (`concurrency_settings`) and
//! starts the run. Measured: time per decision (p50, p99), decisions per
//! run, the drain's total time, and the process's resident memory with the
//! runs cached. `cargo bench -p tektite-controller --bench queue`.

// A benchmark panics on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use tektite_api::v1::{
    Condition, Param, PipelineRun, PipelineRunSpec, PipelineSpec, PipelineTask, TaskRef,
};
use tektite_controller::concurrency::Queue;
use tektite_engine::pipelinerun::concurrency_settings;

const NS: &str = "ci";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    status_kib("VmRSS")
}

/// A Pipeline of five tasks with an `environment` param: what the runs
/// name (its spec is what a reconcile resolves).
fn pipeline() -> PipelineSpec {
    PipelineSpec {
        params: vec![tektite_api::v1::ParamSpec {
            name: "environment".into(),
            ..Default::default()
        }],
        tasks: (0..5)
            .map(|i| PipelineTask {
                name: format!("t{i}"),
                task_ref: Some(TaskRef {
                    name: Some("build".into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn run(i: usize, keys: usize, created: Timestamp) -> PipelineRun {
    let mut pr = PipelineRun::new(&format!("run-{i:05}"), PipelineRunSpec::default());
    pr.metadata.namespace = Some(NS.into());
    pr.metadata.uid = Some(format!("uid-{i}"));
    pr.metadata.creation_timestamp = Some(Time(created + Duration::from_secs(i as u64)));
    pr.metadata.labels = Some([("app.kubernetes.io/name".to_string(), "bench".to_string())].into());
    pr.spec.pipeline_ref = Some(tektite_api::v1::PipelineRef {
        name: Some("deploy".into()),
        ..Default::default()
    });
    pr.spec.params = vec![Param {
        name: "environment".into(),
        value: tektite_api::param::ParamValue::String(format!("env-{}", i % keys.max(1))),
    }];
    pr
}

struct Cache {
    store: reflector::Store<PipelineRun>,
    writer: Writer<PipelineRun>,
    queue: Queue,
}

impl Cache {
    fn new() -> Cache {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&Event::InitDone);
        let queue = Queue::default();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        queue.connect(store.clone(), tx);
        Cache {
            store,
            writer,
            queue,
        }
    }

    fn put(&mut self, pr: &PipelineRun) {
        let mut pr = pr.clone();
        tektite_controller::trim_pipeline_run(&mut pr);
        self.writer.apply_watcher_event(&Event::Apply(pr));
    }
}

fn done(pr: &mut PipelineRun, at: Timestamp) {
    let st = pr.status.get_or_insert_with(Default::default);
    st.conditions = vec![Condition {
        type_: "Succeeded".into(),
        status: "True".into(),
        reason: Some("Succeeded".into()),
        ..Default::default()
    }];
    st.completion_time = Some(Time(at));
}

struct Drained {
    decisions: Vec<Duration>,
    total: Duration,
    rss_cached: u64,
    order_kept: bool,
}

/// Creates the runs, reconciles each once, then ends the holders one by one
/// (oldest first), reconciling what each end wakes, until all are done.
fn drain(n: usize, keys: usize, limit: &str) -> Drained {
    let spec = pipeline();
    let annotations: BTreeMap<String, String> = if keys > 0 {
        [
            (
                "tektite.dev/concurrency-key".to_string(),
                "deploy-$(params.environment)".to_string(),
            ),
            (
                "tektite.dev/concurrency-limit".to_string(),
                limit.to_string(),
            ),
        ]
        .into()
    } else {
        BTreeMap::new()
    };
    let rss_before = rss_kib();
    let mut cache = Cache::new();
    let t0: Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
    let mut runs: Vec<PipelineRun> = (0..n).map(|i| run(i, keys, t0)).collect();
    for pr in &runs {
        cache.put(pr);
    }
    let rss_cached = rss_kib().saturating_sub(rss_before);
    let mut decisions = Vec::new();
    let mut admitted_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let now = t0 + Duration::from_secs(10_000);
    let began = Instant::now();

    // One reconcile of run `i`: settings (recorded once), then the
    // decision on the cache; admitted runs record it.
    let mut reconcile = |i: usize, runs: &mut Vec<PipelineRun>, cache: &mut Cache| {
        let t = Instant::now();
        let pr = &mut runs[i];
        let recorded = pr.status.as_ref().and_then(|s| s.concurrency.clone());
        let settings = match recorded {
            Some(s) => Some(s),
            None => concurrency_settings(pr, (&spec, Some("deploy")), &annotations, (None, now))
                .unwrap(),
        };
        let Some(settings) = settings else {
            // No key: the run starts.
            pr.status.get_or_insert_with(Default::default).start_time = Some(Time(now));
            decisions.push(t.elapsed());
            cache.put(pr);
            return;
        };
        let st = pr.status.get_or_insert_with(Default::default);
        st.concurrency = Some(settings);
        let name = pr.metadata.name.clone().unwrap();
        let verdict = cache.queue.decision(NS, pr, None).unwrap();
        if verdict.admit.contains(&name) {
            let c = pr.status.as_mut().unwrap().concurrency.as_mut().unwrap();
            c.admitted_time = Some(Time(now));
            admitted_order
                .entry(c.key.clone().unwrap())
                .or_default()
                .push(name);
        }
        decisions.push(t.elapsed());
        cache.put(pr);
    };

    for i in 0..n {
        reconcile(i, &mut runs, &mut cache);
    }
    let index: BTreeMap<String, usize> = (0..n).map(|i| (format!("run-{i:05}"), i)).collect();
    loop {
        let holder = (0..n).find(|&i| tektite_engine::concurrency::holds(&runs[i]));
        let Some(h) = holder else { break };
        done(&mut runs[h], now);
        cache.put(&runs[h]);
        for name in cache.queue.to_wake(&runs[h], NS, None) {
            reconcile(index[&name], &mut runs, &mut cache);
        }
    }
    let total = began.elapsed();
    let left = runs
        .iter()
        .filter(|r| {
            !r.status
                .as_ref()
                .is_some_and(|s| s.start_time.is_some() || !s.conditions.is_empty())
        })
        .count();
    assert_eq!(left, 0, "{left} runs never started");
    // Within each key, runs were admitted in creation (= name) order.
    let order_kept = admitted_order
        .values()
        .all(|names| names.windows(2).all(|w| w[0] < w[1]));
    drop(cache.store);
    Drained {
        decisions,
        total,
        rss_cached,
        order_kept,
    }
}

fn pct(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn hwm_kib() -> u64 {
    status_kib("VmHWM")
}

/// One scenario in this process: its figures as one line of numbers.
fn scenario(n: usize, keys: usize) {
    let mut d = drain(n, keys, "2");
    assert!(d.order_kept, "a key admitted a run before an older one");
    let count = d.decisions.len();
    let p50 = pct(&mut d.decisions, 0.5);
    let p99 = pct(&mut d.decisions, 0.99);
    println!(
        "RESULT {count} {} {} {} {} {}",
        p50.as_nanos(),
        p99.as_nanos(),
        d.total.as_nanos(),
        d.rss_cached,
        hwm_kib()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("BENCH_RUNS", 1000);
    let keys = env("BENCH_KEYS", 50);
    if let Ok(k) = std::env::var("BENCH_SCENARIO_KEYS") {
        scenario(n, k.parse().unwrap());
        return;
    }
    // Each scenario in a process of its own: its memory is its own.
    let run = |k: usize| -> Vec<f64> {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("BENCH_SCENARIO_KEYS", k.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .unwrap()
            .split(' ')
            .map(|x| x.parse().unwrap())
            .collect()
    };
    let base = run(0);
    let keyed = run(keys);
    let us = |ns: f64| format!("{:.1} µs", ns / 1e3);
    println!(
        "\nconcurrency control: {n} PipelineRuns, drained as the controller decides them (1 namespace)"
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>12} {:>14} {:>10}",
        "", "decisions", "p50", "p99", "drain total", "cache (RSS)", "peak RSS"
    );
    for (label, r) in [
        ("baseline: no keys".to_string(), &base),
        (format!("{keys} keys, limit 2"), &keyed),
    ] {
        println!(
            "{:<22} {:>10} {:>10} {:>10} {:>12} {:>10.1} MiB {:>6.1} MiB",
            label,
            r[0],
            us(r[1]),
            us(r[2]),
            format!("{:.0} ms", r[3] / 1e6),
            r[4] / 1024.0,
            r[5] / 1024.0
        );
    }
    println!(
        "(decisions: reconciles of a run before it starts, each over the namespace's cached runs; \
         cache: resident memory added by caching the {n} runs; peak: the scenario's process)"
    );
}
