//! Step→step handoff (`cargo bench -p tektite-entrypoint`, or hack/bench.sh).
//!
//! A chain of 50 steps running `true` is launched at once; each waits for
//! the previous step's marker, and the first for a start file written once
//! every step is waiting (so process start-up is not counted as handoff). The handoff of step i+1 is the time from step
//! i's command ending (its `finishedAt`, before its report and marker are
//! written) to step i+1's command starting (`startedAt`): an upper bound of
//! "marker written → next command started". The same chain with the waiter
//! forced to poll every 100 ms and every 1 s (Tekton's interval) is the
//! baseline, measured in the same run. Budget: p50 ≤ 2 ms.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_entrypoint");
const STEPS: usize = 50;

fn steps() -> usize {
    std::env::var("HANDOFF_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STEPS)
}

/// Microseconds since midnight of an RFC 3339 UTC time (the chain runs in seconds).
fn micros(t: &str) -> i64 {
    let time = &t[11..t.len() - 1];
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut it = hms.split(':').map(|x| x.parse::<i64>().unwrap_or(0));
    let (h, m, s) = (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    ((h * 60 + m) * 60 + s) * 1_000_000 + frac.parse::<i64>().unwrap_or(0)
}

fn field(dir: &Path, i: usize, key: &str) -> i64 {
    let text =
        std::fs::read_to_string(dir.join(format!("run/{i}/status/report.json"))).expect("report");
    let v: serde_json::Value = serde_json::from_str(&text).expect("report json");
    micros(v[key].as_str().expect("time"))
}

fn chain(base: &Path, poll_ms: Option<u64>) -> Vec<i64> {
    let dir: PathBuf = base.join(format!("chain-{}", poll_ms.unwrap_or(0)));
    let _ = std::fs::remove_dir_all(&dir);
    // As in a pod, every /tekton/run/<i> exists before the steps start.
    for i in 0..steps() {
        std::fs::create_dir_all(dir.join(format!("run/{i}"))).expect("mkdir");
    }
    let mut children = Vec::new();
    for i in (0..steps()).rev() {
        let p = |rel: String| dir.join(rel).to_string_lossy().into_owned();
        let mut cmd = Command::new(BIN);
        let wait = if i > 0 {
            p(format!("run/{}/out", i - 1))
        } else {
            p("start".into())
        };
        cmd.args(["-wait_file", &wait]);
        cmd.args(["-post_file", &p(format!("run/{i}/out"))])
            .args(["-step_metadata_dir", &p(format!("run/{i}/status"))])
            .args(["-termination_path", "", "--", "true"])
            .stdout(Stdio::null());
        if let Some(ms) = poll_ms {
            cmd.env("TEKTITE_ENTRYPOINT_POLL_MS", ms.to_string());
        }
        children.push(cmd.spawn().expect("spawn entrypoint"));
    }
    // Every step is waiting once it has its inotify watch (or, polling, has
    // had time to start).
    for c in &children {
        let fdinfo = format!("/proc/{}/fdinfo", c.id());
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(10) {
            let watching = std::fs::read_dir(&fdinfo)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("inotify")));
            if watching
                || (poll_ms.is_some() && start.elapsed() > std::time::Duration::from_millis(300))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    std::fs::write(dir.join("start"), "").expect("start");
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    let mut handoffs: Vec<i64> = (1..steps())
        .map(|i| field(&dir, i, "startedAt") - field(&dir, i - 1, "finishedAt"))
        .collect();
    handoffs.sort_unstable();
    let _ = std::fs::remove_dir_all(&dir);
    handoffs
}

fn pct(v: &[i64], q: f64) -> f64 {
    v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
}

fn main() {
    // Like an emptyDir on a node's disk when /dev/shm is missing; tmpfs otherwise.
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    }
    .join(format!("tektite-handoff-{}", std::process::id()));
    println!(
        "{:<30} {:>6} {:>9} {:>9} {:>9}",
        "waiter (50-step chain)", "steps", "p50 ms", "p99 ms", "max ms"
    );
    for (name, poll) in [
        ("inotify (Tektite)", None),
        ("poll every 100 ms", Some(100)),
        ("poll every 1 s (Tekton)", Some(1000)),
    ] {
        let h = chain(&base, poll);
        println!(
            "{:<30} {:>6} {:>9.3} {:>9.3} {:>9.3}",
            name,
            steps(),
            pct(&h, 0.5),
            pct(&h, 0.99),
            pct(&h, 1.0)
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}
