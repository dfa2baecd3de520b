//! The log archive under load: the real controller binary against the
//! dev cluster's API server (in this process), with N containers logging
//! at once (default 200: `BENCH_CONTAINERS`), each a line of 100 bytes
//! every 20 ms for `BENCH_SECONDS` (default 10). The containers' logs are
//! files the API server serves as `pods/log`, written by this process (no
//! podman: the archive is what is measured).
//!
//! Two runs, same load: the controller without an archive (the baseline),
//! then with a directory archive. Measured: the bytes logged and archived
//! (every sealed log is read back and compared with what was written),
//! the time from the last line written to every log sealed, and the
//! controller's CPU time and peak RSS. `cargo bench -p tektite-controller
//! --bench archive`.

// A benchmark panics on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tektite_devcluster::apiserver::{ApiServer, Key};

const TEKTON: &str = "tekton.dev/v1";
const LINE: usize = 100;
const EVERY: Duration = Duration::from_millis(20);

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The TaskRuns (finished: the controller leaves them be) and their pods,
/// each with one running container `step-log`.
fn create_runs(api: &ApiServer, n: usize) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for i in 0..n {
        let name = format!("bench-{i}");
        let (code, tr) = api.shared.create(
            TEKTON,
            "taskruns",
            "default",
            json!({
                "apiVersion": TEKTON, "kind": "TaskRun",
                "metadata": {"name": name},
                "spec": {"taskSpec": {"steps": [{"name": "log", "image": "busybox"}]}},
            }),
        );
        assert_eq!(code, 201, "{tr}");
        api.shared.update(&Key::new(TEKTON, "taskruns", "default", &name), |t| {
            t["status"] = json!({
                "podName": format!("{name}-pod"),
                "startTime": now,
                "completionTime": now,
                "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded", "lastTransitionTime": now}],
            });
        });
        let (code, pod) = api.shared.create(
            "v1",
            "pods",
            "default",
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": format!("{name}-pod"),
                    "labels": {"tekton.dev/taskRun": name},
                    "ownerReferences": [{
                        "apiVersion": TEKTON, "kind": "TaskRun", "name": name,
                        "uid": tr["metadata"]["uid"], "controller": true,
                    }],
                },
                "spec": {"containers": [{"name": "step-log", "image": "busybox"}]},
            }),
        );
        assert_eq!(code, 201, "{pod}");
        set_state(
            api,
            &format!("{name}-pod"),
            json!({"running": {"startedAt": now}}),
        );
    }
}

fn set_state(api: &ApiServer, pod: &str, state: Value) {
    api.shared
        .update(&Key::new("v1", "pods", "default", pod), |p| {
            p["status"] = json!({
                "phase": if state.get("running").is_some() { "Running" } else { "Succeeded" },
                "containerStatuses": [{"name": "step-log", "image": "busybox", "imageID": "x",
                                       "ready": false, "restartCount": 0, "state": state}],
            });
        });
}

/// `/proc/PID/status`'s `field` in KiB, and utime + stime in seconds.
fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or_default();
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after ")".
    (f[11] + f[12]) as f64 / 100.0
}

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Files under `dir` ending with `.log.gz`.
fn sealed(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".log.gz") {
                out.push(p);
            }
        }
    }
    out
}

struct Outcome {
    logged: u64,
    archived: Option<u64>,
    drain: Option<Duration>,
    cpu: f64,
    peak_kib: u64,
}

async fn run(n: usize, seconds: u64, archive: bool) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let store = dir.path().join("archive");
    std::fs::create_dir_all(&logs).unwrap();
    let api = ApiServer::start().await.unwrap();
    let l = logs.clone();
    api.shared
        .serve_logs_from(Box::new(move |_, pod, c| l.join(format!("{pod}.{c}.log"))));
    create_runs(&api, n);
    let kubeconfig = api.kubeconfig(dir.path()).unwrap();
    let out = std::fs::File::create(dir.path().join("controller.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tektite-controller"));
    cmd.args([
        "--leader-elect=false",
        "--metrics-addr=127.0.0.1:0",
        "--namespace=tektite",
        "--logs-addr=",
    ]);
    if archive {
        cmd.arg(format!("--log-archive=file://{}", store.display()));
    }
    let child = cmd
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let controller = Controller(child);
    let pid = controller.0.id();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The files exist from the start: the containers have started.
    let mut files: Vec<std::fs::File> = (0..n)
        .map(|i| std::fs::File::create(logs.join(format!("bench-{i}-pod.step-log.log"))).unwrap())
        .collect();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(
                    proc_kib(pid, "VmRSS:"),
                    std::sync::atomic::Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let writer = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut logged = 0u64;
        let mut tick = 0u64;
        while start.elapsed() < Duration::from_secs(seconds) {
            for (i, f) in files.iter_mut().enumerate() {
                let mut line = format!("container {i} line {tick} ");
                line.extend(std::iter::repeat_n('x', LINE - 1 - line.len()));
                line.push('\n');
                f.write_all(line.as_bytes()).unwrap();
                logged += line.len() as u64;
            }
            tick += 1;
            std::thread::sleep(EVERY);
        }
        logged
    });
    let logged = writer.await.unwrap();
    let ended = Instant::now();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for i in 0..n {
        set_state(
            &api,
            &format!("bench-{i}-pod"),
            json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}),
        );
    }
    let (mut archived, mut drain) = (None, None);
    if archive {
        while sealed(&store).len() < n {
            assert!(
                ended.elapsed() < Duration::from_secs(300),
                "{} of {n} logs sealed",
                sealed(&store).len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drain = Some(ended.elapsed());
        let mut total = 0u64;
        for f in sealed(&store) {
            let mut text = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(&f).unwrap()),
                &mut text,
            )
            .unwrap();
            total += text.len() as u64;
        }
        assert_eq!(total, logged, "the archive holds what was logged");
        archived = Some(total);
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    sampling.abort();
    Outcome {
        logged,
        archived,
        drain,
        cpu: cpu_seconds(pid),
        peak_kib: peak.load(std::sync::atomic::Ordering::Relaxed),
    }
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("BENCH_CONTAINERS", 200) as usize;
    let seconds = env("BENCH_SECONDS", 10);
    println!(
        "log archive: {n} containers, each a {LINE}-byte line every {} ms for {seconds} s",
        EVERY.as_millis()
    );
    println!(
        "| controller | logged | archived | throughput | last line → all sealed | controller CPU | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, archive) in [
        ("no archive (baseline)", false),
        ("directory archive", true),
    ] {
        let o = run(n, seconds, archive).await;
        let throughput = match (o.archived, o.drain) {
            (Some(a), Some(d)) => format!(
                "{:.2} MB/s",
                a as f64 / 1e6 / (seconds as f64 + d.as_secs_f64())
            ),
            _ => "-".into(),
        };
        println!(
            "| {label} | {} | {} | {throughput} | {} | {:.1} s | {:.1} MiB |",
            mb(o.logged),
            o.archived.map_or("-".into(), mb),
            o.drain
                .map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64())),
            o.cpu,
            o.peak_kib as f64 / 1024.0
        );
    }
}
