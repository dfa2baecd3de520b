//! The controller against a simulated API server, in process: PipelineRuns
//! created at a steady rate (default 10,000 at 50/s: `BENCH_RUNS`,
//! `BENCH_RATE`), each with one Task. The fake server keeps objects in
//! memory and, like a watch, hands every created PipelineRun and TaskRun to
//! the controller's reconcilers through a queue drained by worker tasks.
//!
//! Measured: TaskRun created → its Pod created (p50/p99), against a
//! baseline measured in the same run: one create through the same client and
//! fake server. Then the memory the process holds with every run finished
//! and cached (the reflector stores' share, trimmed as the controller trims
//! them: `trim_task_run`, `trim_pipeline_run`). The process total also holds
//! the fake server's own copy of every object, pods included. `cargo bench -p tektite-controller --bench apiserver`.

// A benchmark panics on setup failures by design.
#![allow(clippy::unwrap_used)]

#[path = "../../api/benches/common/measure.rs"]
#[allow(dead_code)]
mod measure;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};
use tektite_api::v1::{PipelineRun, TaskRun};
use tektite_controller::{Context, pipelinerun, taskrun};
use tokio::sync::mpsc;

/// What a created object asks the controller to do.
enum Work {
    PipelineRun(String),
    TaskRun(String),
}

#[derive(Default)]
struct State {
    objects: HashMap<String, Value>,
    /// TaskRun name → when it was created.
    task_run_created: HashMap<String, Instant>,
    /// Latencies TaskRun created → Pod created.
    latencies: Vec<Duration>,
}

/// The fake API server: a tower service over an in-memory map.
#[derive(Clone)]
struct Fake {
    state: Arc<Mutex<State>>,
    work: mpsc::UnboundedSender<Work>,
}

fn reply(status: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "metadata": {}})
}

impl Fake {
    /// Answers one request: GET, list (by label), POST, PATCH, DELETE.
    fn handle(&self, method: &str, path: &str, query: &str, body: Value) -> Response<Body> {
        let mut st = self.state.lock().unwrap();
        let path = path.trim_end_matches("/status");
        match method {
            "GET" if path.ends_with("/taskruns") => {
                let label = query
                    .split('&')
                    .find_map(|q| q.strip_prefix("labelSelector="))
                    .map(|l| l.replace("%2F", "/").replace("%3D", "="))
                    .unwrap_or_default();
                let (k, v) = label.split_once('=').unwrap_or(("", ""));
                let prefix = format!("{path}/");
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(key, o)| key.starts_with(&prefix) && o["metadata"]["labels"][k] == v)
                    .map(|(_, o)| o.clone())
                    .collect();
                reply(
                    200,
                    &json!({"apiVersion": "tekton.dev/v1", "kind": "TaskRunList", "metadata": {}, "items": items}),
                )
            }
            "GET" => match st.objects.get(path) {
                Some(o) => reply(200, o),
                None => reply(404, &not_found()),
            },
            "POST" => {
                if path.contains("/events") {
                    return reply(201, &body);
                }
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let key = format!("{path}/{name}");
                if st.objects.contains_key(&key) {
                    return reply(
                        409,
                        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "metadata": {}}),
                    );
                }
                let mut obj = body.clone();
                obj["metadata"]["uid"] = json!(format!("uid-{name}"));
                obj["metadata"]["creationTimestamp"] =
                    json!(k8s_openapi::jiff::Timestamp::now().to_string());
                st.objects.insert(key, obj.clone());
                if path.ends_with("/taskruns") {
                    st.task_run_created.insert(name.clone(), Instant::now());
                    let _ = self.work.send(Work::TaskRun(name));
                } else if path.ends_with("/pipelineruns") {
                    let _ = self.work.send(Work::PipelineRun(name));
                } else if path.ends_with("/pods") {
                    let tr = obj["metadata"]["labels"]["tekton.dev/taskRun"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if let Some(t) = st.task_run_created.get(&tr).copied() {
                        st.latencies.push(t.elapsed());
                    }
                }
                reply(201, &obj)
            }
            "PATCH" => {
                let Some(o) = st.objects.get_mut(path) else {
                    return reply(404, &not_found());
                };
                if let Some(s) = body.get("status") {
                    o["status"] = s.clone();
                }
                if let Some(spec) = body.get("spec").and_then(Value::as_object) {
                    for (k, v) in spec {
                        o["spec"][k] = v.clone();
                    }
                }
                reply(200, &o.clone())
            }
            "DELETE" => {
                let o = st.objects.remove(path).unwrap_or_else(not_found);
                reply(200, &o)
            }
            _ => reply(405, &json!({})),
        }
    }
}

impl tower::Service<Request<Body>> for Fake {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok(this.handle(&method, &path, &query, body))
        })
    }
}

struct NoImages;

impl tektite_oci::ImageLookup for NoImages {
    fn lookup<'a>(
        &'a self,
        image: &'a str,
        _: Option<&'a tektite_oci::Credentials>,
    ) -> tektite_oci::LookupFuture<'a> {
        Box::pin(async move { panic!("no image lookup expected ({image})") })
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pct(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The cache, in a process of its own: every run of the file, typed and
/// trimmed as the controller's stores hold them.
fn cache_only(file: &str) {
    use std::io::BufRead as _;
    let before = rss_kib();
    let mut prs: Vec<Arc<PipelineRun>> = Vec::new();
    let mut trs: Vec<Arc<TaskRun>> = Vec::new();
    let lines = std::io::BufReader::new(std::fs::File::open(file).unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        // Written sorted by key: apiVersion, then kind. (A TaskRun names a
        // PipelineRun as its owner: match the top-level kind only.)
        if line.starts_with(r#"{"apiVersion":"tekton.dev/v1","kind":"PipelineRun""#) {
            let mut pr: PipelineRun = serde_json::from_str(&line).unwrap();
            tektite_controller::trim_pipeline_run(&mut pr);
            prs.push(Arc::new(pr));
        } else if line.starts_with(r#"{"apiVersion":"tekton.dev/v1","kind":"TaskRun""#) {
            let mut tr: TaskRun = serde_json::from_str(&line).unwrap();
            tektite_controller::trim_task_run(&mut tr);
            trs.push(Arc::new(tr));
        }
    }
    let after = rss_kib();
    println!(
        "memory: {} PipelineRuns and {} TaskRuns finished and cached: process RSS {:.1} MiB, of which the cache {:.1} MiB (budget 64 MiB)",
        prs.len(),
        trs.len(),
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / 1024.0
    );
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if let Ok(file) = std::env::var("BENCH_CACHE_FILE") {
        cache_only(&file);
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(load());
}

async fn load() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rate: f64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50.0);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let fake = Fake {
        state: Arc::new(Mutex::new(State::default())),
        work: tx,
    };
    let client = Client::new(fake.clone(), "bench");
    let ctx = Arc::new(Context::new(client.clone(), Arc::new(NoImages)));
    fake.state.lock().unwrap().objects.insert(
        "/apis/tekton.dev/v1/namespaces/bench/tasks/echo".into(),
        json!({"apiVersion": "tekton.dev/v1", "kind": "Task", "metadata": {"name": "echo", "namespace": "bench"},
               "spec": {"steps": [{"name": "say", "image": "alpine", "command": ["echo", "hi"]}]}}),
    );
    fake.state.lock().unwrap().objects.insert(
        "/apis/tekton.dev/v1/namespaces/bench/pipelines/one".into(),
        json!({"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "one", "namespace": "bench"},
               "spec": {"tasks": [{"name": "echo", "taskRef": {"name": "echo"}}]}}),
    );

    // Baseline: one create through the same client and fake server.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let mut base = Vec::new();
    for i in 0..1000 {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": format!("baseline-{i}")},
            "spec": {"containers": [{"name": "c", "image": "alpine"}]}}))
        .unwrap();
        let t = Instant::now();
        pods.create(&Default::default(), &p).await.unwrap();
        base.push(t.elapsed());
    }

    // The controller: workers reconcile what the "watch" hands them.
    let state = fake.state.clone();
    let worker = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            while let Some(w) = rx.recv().await {
                let ctx = ctx.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let (path, kind) = match &w {
                        Work::PipelineRun(n) => (
                            format!("/apis/tekton.dev/v1/namespaces/bench/pipelineruns/{n}"),
                            0,
                        ),
                        Work::TaskRun(n) => (
                            format!("/apis/tekton.dev/v1/namespaces/bench/taskruns/{n}"),
                            1,
                        ),
                    };
                    let obj = state.lock().unwrap().objects.get(&path).cloned().unwrap();
                    if kind == 0 {
                        let pr: PipelineRun = serde_json::from_value(obj).unwrap();
                        pipelinerun::reconcile(Arc::new(pr), ctx).await.unwrap();
                    } else {
                        let tr: TaskRun = serde_json::from_value(obj).unwrap();
                        taskrun::reconcile(Arc::new(tr), ctx).await.unwrap();
                    }
                });
            }
        })
    };

    // The load: PipelineRuns at `rate` per second.
    let prs: Api<PipelineRun> = Api::namespaced(client.clone(), "bench");
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    for i in 0..runs {
        tick.tick().await;
        let pr: PipelineRun =
            serde_json::from_value(json!({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
            "metadata": {"name": format!("run-{i}"), "namespace": "bench"},
            "spec": {"pipelineRef": {"name": "one"}}}))
            .unwrap();
        prs.create(&Default::default(), &pr).await.unwrap();
    }
    // Wait for the last pods.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.state.lock().unwrap().latencies.len() < runs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let mut lat = std::mem::take(&mut fake.state.lock().unwrap().latencies);
    assert_eq!(lat.len(), runs, "every TaskRun got its pod");
    worker.abort();

    // Memory: every run finished, written out, then cached by a fresh
    // process (this binary again) as the controller's stores keep them, so
    // that neither the fake server's copies nor this run's garbage count.
    let file =
        std::env::temp_dir().join(format!("tektite-bench-runs-{}.ndjson", std::process::id()));
    {
        use std::io::Write as _;
        let st = fake.state.lock().unwrap();
        let done = json!([{"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "done",
                           "lastTransitionTime": "2026-11-27T10:00:00Z"}]);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for (k, o) in &st.objects {
            if k.contains("/pipelineruns/") || k.contains("/taskruns/") {
                let mut o = o.clone();
                o["status"]["conditions"] = done.clone();
                serde_json::to_writer(&mut out, &o).unwrap();
                out.write_all(b"\n").unwrap();
            }
        }
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("BENCH_CACHE_FILE", &file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let memory = String::from_utf8_lossy(&child.stdout).trim().to_string();
    let (bp50, bp99) = (pct(&mut base, 0.5), pct(&mut base, 0.99));
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    println!(
        "controller on a simulated API server: {runs} PipelineRuns at {rate}/s ({:.1} s)",
        took.as_secs_f64()
    );
    println!("{:<48} {:>10} {:>10}", "", "p50 ms", "p99 ms");
    println!(
        "{:<48} {:>10} {:>10}",
        "baseline: one create (client + fake server)",
        measure::ms(bp50, 3),
        measure::ms(bp99, 3)
    );
    println!(
        "{:<48} {:>10} {:>10}",
        "TaskRun created -> Pod created (budget p99 100)",
        measure::ms(p50, 3),
        measure::ms(p99, 3)
    );
    println!("{memory}");
}
