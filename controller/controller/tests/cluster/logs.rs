//! Logs that outlive pods, on the dev cluster: the controller archives
//! every step's log as it is printed (a directory archive here), serves
//! it over HTTPS to whoever may get the TaskRun, and `tkt tr|pr logs`
//! reads it once the pod is gone. Each log is compared line by line with
//! what the step printed (the kubelet's own log file).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tektite_devcluster::apiserver::Key;

use super::cli::text;
use super::{Cluster, Replica, TEKTON, free_port, podman_ready};

/// A cluster whose controller archives logs in a directory of its own
/// (returned) and serves them on a loopback port; `extra` flags after
/// those. Also the flags, for a controller started again.
async fn archiving(extra: &[&str]) -> (Cluster, Vec<String>, tempfile::TempDir) {
    let archive = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut args: Vec<String> = [
        "--leader-elect=false",
        "--log-flush-seconds=1",
        "--log-sweep-seconds=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--log-archive=file://{}", archive.path().display()));
    args.push(format!("--logs-addr=127.0.0.1:{port}"));
    args.push(format!("--logs-url=https://127.0.0.1:{port}"));
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = Cluster::start(&refs).await;
    c.wait_log("log archive: following").await;
    (c, args, archive)
}

/// A TaskRun of one step that runs `script`.
fn task_run(name: &str, script: &str) -> Value {
    json!({
        "apiVersion": TEKTON,
        "kind": "TaskRun",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"taskSpec": {"steps": [{
            "name": "print",
            "image": super::BUSYBOX,
            "script": script,
        }]}},
    })
}

/// The numbered lines `line 1` … `line n`.
fn numbered(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("line {i}")).collect()
}

/// The lines of `tkt` output that a step printed (`[print] line 7` →
/// `line 7`).
fn printed(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest).or(Some(l)))
        .filter(|l| l.starts_with("line "))
        .map(str::to_string)
        .collect()
}

/// Creates an RBAC object in namespace default.
fn rbac(c: &Cluster, resource: &str, v: Value) {
    let (code, out) = c
        .api
        .shared
        .create("rbac.authorization.k8s.io/v1", resource, "default", v);
    assert_eq!(code, 201, "{out}");
}

impl Cluster {
    /// The kubelet's log file of the step: what it printed.
    fn kubelet_log(&self, pod: &str) -> PathBuf {
        self.dir
            .path()
            .join("kubelet/state/logs")
            .join(pod)
            .join("step-print.log")
    }

    async fn pod_of(&self, tr: &str) -> String {
        let got = self
            .wait_for("taskruns", "default", tr, "a pod", |t| {
                t["status"]["podName"]
                    .as_str()
                    .is_some_and(|p| !p.is_empty())
            })
            .await;
        got["status"]["podName"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the step has printed `line n` (bounded).
    async fn wait_printed(&self, pod: &str, n: usize) {
        let start = Instant::now();
        let want = format!("line {n}\n");
        loop {
            let log = std::fs::read_to_string(self.kubelet_log(pod)).unwrap_or_default();
            if log.contains(&want) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{pod} never printed {want:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the pod's status shows its step started.
    async fn wait_started(&self, pod: &str) {
        self.wait_for_object("v1", "pods", "default", pod, "its step started", |p| {
            p["status"]["containerStatuses"][0]["state"]
                .as_object()
                .is_some_and(|s| s.contains_key("running") || s.contains_key("terminated"))
        })
        .await;
    }

    /// Waits until the archive (a directory) holds the pod's step log
    /// sealed.
    async fn wait_sealed(&self, archive: &Path, pod: &str) {
        self.wait_archived(archive, &format!("{pod}_*"), ".log.gz")
            .await;
    }

    /// Waits until the archive holds `step-print{what}` of a pod whose
    /// directory matches `pod` (`NAME_UID`, a glob); the first file found.
    async fn wait_archived(&self, archive: &Path, pod: &str, what: &str) -> PathBuf {
        let start = Instant::now();
        loop {
            let found = std::process::Command::new("find")
                .arg(archive)
                .args(["-path", &format!("*/{pod}/step-print{what}")])
                .output()
                .unwrap();
            if let Some(f) = text(&found.stdout).lines().next() {
                return PathBuf::from(f);
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "step-print{what} of {pod} never archived:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates the TaskRun of one step running `script`; its pod once
    /// its status shows the step started.
    async fn start_run(&self, name: &str, script: &str) -> String {
        self.create("taskruns", "default", task_run(name, script));
        let pod = self.pod_of(name).await;
        self.wait_started(&pod).await;
        pod
    }

    /// Kills the controller (`kill -9`) and starts another with `args`;
    /// `between` runs while none runs.
    fn restart_controller(&mut self, args: &[String], between: impl FnOnce(&Cluster)) {
        let _ = self.controller.child.kill();
        let _ = self.controller.child.wait();
        between(self);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.controller = Replica::spawn(&self.api, self.dir.path(), "replica-b", &refs);
    }

    fn delete_pod(&self, pod: &str) {
        assert!(
            self.api
                .shared
                .delete(&Key::new("v1", "pods", "default", pod)),
            "pod {pod} was not there to delete"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_pods_deleted_mid_run_and_after_the_end_are_complete() {
    if !podman_ready() {
        return;
    }
    let (c, _, archive) = archiving(&[]).await;
    // One ends on its own; one prints, then would sleep for long.
    c.create(
        "taskruns",
        "default",
        task_run("ends", "for i in $(seq 1 500); do echo \"line $i\"; done"),
    );
    c.create(
        "taskruns",
        "default",
        task_run(
            "sleeps",
            "for i in $(seq 1 150); do echo \"line $i\"; done; sleep 2\n\
             for i in $(seq 151 300); do echo \"line $i\"; done; sleep 600",
        ),
    );
    // Cancelled mid-run: its pod is deleted (as Tekton does), with the
    // step still running. (The archive follows a container from the first
    // pod status that shows it started.)
    // Its first lines archived, the last ones printed and cancelled at
    // once: they are still waiting for their part (1 s) when the pod goes.
    let sleeps = c.pod_of("sleeps").await;
    c.wait_started(&sleeps).await;
    c.wait_archived(archive.path(), &format!("{sleeps}_*"), ".parts/*")
        .await;
    c.wait_printed(&sleeps, 300).await;
    let cancel = c.tkt(&["tr", "cancel", "--cluster", "sleeps"]).await;
    assert_eq!(cancel.status.code(), Some(0), "{}", text(&cancel.stderr));
    c.wait_for("taskruns", "default", "sleeps", "its end", |t| {
        t["status"]["conditions"][0]["reason"] == "TaskRunCancelled"
    })
    .await;
    let start = Instant::now();
    while c.get("v1", "pods", "default", &sleeps).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{sleeps} not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.wait_for("taskruns", "default", "ends", "its end", |t| {
        t["status"]["conditions"][0]["status"] == "True"
    })
    .await;
    // Deleted once its log is sealed (a moment after the end).
    let ends = c.pod_of("ends").await;
    c.wait_sealed(archive.path(), &ends).await;
    c.delete_pod(&ends);

    for (tr, n) in [("ends", 500), ("sleeps", 300)] {
        let o = c.tkt(&["tr", "logs", "--cluster", tr]).await;
        let out = text(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
        assert_eq!(
            printed(&out),
            numbered(n),
            "{tr}: {}\n{out}\n{}\n{}",
            text(&o.stderr),
            String::from_utf8_lossy(
                &std::process::Command::new("find")
                    .arg(archive.path())
                    .output()
                    .unwrap()
                    .stdout
            ),
            c.log()
        );
        // -f on a run whose pod is gone prints the archive and exits.
        let f = c.tkt(&["tr", "logs", "--cluster", "-f", tr]).await;
        assert_eq!(
            printed(&text(&f.stdout)),
            numbered(n),
            "{tr} -f: {}",
            text(&f.stderr)
        );
    }
    let metrics = c.scrape().await;
    let archived = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tektite_log_archived_bytes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_default();
    assert!(archived >= 4000.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restart_mid_run_loses_and_repeats_nothing() {
    if !podman_ready() {
        return;
    }
    let (mut c, args, _archive) = archiving(&[]).await;
    let pod = c
        .start_run(
            "slow",
            "for i in $(seq 1 150); do echo \"line $i\"; sleep 0.04; done",
        )
        .await;
    c.wait_printed(&pod, 20).await;
    // kill -9, then a new controller (the old one never flushed its last
    // second).
    c.restart_controller(&args, |_| {});
    c.wait_for("taskruns", "default", "slow", "its end", |t| {
        t["status"]["conditions"][0]["status"] == "True"
    })
    .await;
    c.delete_pod(&pod);
    let o = c.tkt(&["tr", "logs", "--cluster", "slow"]).await;
    assert_eq!(
        printed(&text(&o.stdout)),
        numbered(150),
        "{}\n{}",
        text(&o.stderr),
        c.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_user_who_may_get_the_taskrun_reads_its_archived_logs() {
    if !podman_ready() {
        return;
    }
    let (c, _, archive) = archiving(&[]).await;
    c.create(
        "taskruns",
        "default",
        task_run("secret-work", "echo 'line 1'"),
    );
    c.wait_for("taskruns", "default", "secret-work", "its end", |t| {
        t["status"]["conditions"][0]["status"] == "True"
    })
    .await;
    let pod = c.pod_of("secret-work").await;
    c.wait_sealed(archive.path(), &pod).await;
    c.delete_pod(&pod);

    c.api
        .shared
        .add_token("alice-token", "alice", &["system:authenticated"]);
    let alice = c
        .api
        .kubeconfig_for(c.dir.path(), "alice.kubeconfig", "alice-token")
        .unwrap();
    let as_alice = |c: &Cluster| {
        let mut cmd = c.tkt_command(&["tr", "logs", "--cluster", "secret-work"]);
        cmd.env("KUBECONFIG", &alice);
        cmd.output().unwrap()
    };
    // Alice may read the ConfigMap that says where the server is (as the
    // install manifests allow everyone), not the TaskRun.
    rbac(
        &c,
        "roles",
        json!({
            "metadata": {"name": "taskrun-reader"},
            "rules": [{"apiGroups": ["tekton.dev"], "resources": ["taskruns"], "verbs": ["get"]}],
        }),
    );
    let refused = as_alice(&c);
    let err = text(&refused.stderr);
    assert!(printed(&text(&refused.stdout)).is_empty(), "{err}");
    assert!(err.contains("forbidden") && err.contains("alice"), "{err}");
    // Bound to get TaskRuns in the namespace: she reads them.
    rbac(
        &c,
        "rolebindings",
        json!({
            "metadata": {"name": "alice-reads-taskruns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "taskrun-reader"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
        }),
    );
    // (the server remembers a decision for 10 s)
    let start = Instant::now();
    loop {
        let o = as_alice(&c);
        if printed(&text(&o.stdout)) == numbered(1) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            text(&o.stderr)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_past_the_size_cap_are_marked_and_a_deleted_run_takes_its_logs() {
    if !podman_ready() {
        return;
    }
    let (c, _, archive) = archiving(&["--logs-max-bytes=100"]).await;
    c.create(
        "taskruns",
        "default",
        task_run("chatty", "for i in $(seq 1 100); do echo \"line $i\"; done"),
    );
    c.wait_for("taskruns", "default", "chatty", "its end", |t| {
        t["status"]["conditions"][0]["status"] == "True"
    })
    .await;
    let pod = c.pod_of("chatty").await;
    c.wait_sealed(archive.path(), &pod).await;
    c.delete_pod(&pod);
    let o = c.tkt(&["tr", "logs", "--cluster", "chatty"]).await;
    let out = text(&o.stdout);
    // 100 bytes: lines 1 to 13 whole (95 bytes), then 5 bytes of line 14.
    assert_eq!(printed(&out)[..13], numbered(13)[..], "{out}");
    assert!(!out.contains("line 14"), "{out}");
    assert!(
        out.contains("the archive keeps the first 100 bytes of a container's log"),
        "{out}"
    );
    // The TaskRun deleted: its logs go with the next sweep.
    let owner = archive.path().join("default/-");
    assert!(owner.read_dir().is_ok_and(|mut d| d.next().is_some()));
    assert!(
        c.api
            .shared
            .delete(&Key::new(TEKTON, "taskruns", "default", "chatty"))
    );
    let start = Instant::now();
    while owner.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the logs of a deleted run are still archived:\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_while_the_controller_is_down_keeps_what_was_archived() {
    if !podman_ready() {
        return;
    }
    let (mut c, args, archive) = archiving(&[]).await;
    let pod = c
        .start_run(
            "unlucky",
            "for i in $(seq 1 600); do echo \"line $i\"; sleep 0.05; done",
        )
        .await;
    let uid = c.get("v1", "pods", "default", &pod).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    c.wait_archived(archive.path(), &format!("{pod}_*"), ".parts/*")
        .await;
    c.wait_printed(&pod, 60).await;
    // kill -9; the pod goes while no controller runs; a new one starts
    // (and the TaskRun gets a new pod of the same name, as in Tekton).
    c.restart_controller(&args, |c| c.delete_pod(&pod));
    // No follower is left for that pod: the sweep seals what was archived
    // before the kill, whole from its start, saying the rest is missing
    // (the lines after the last part written: --log-flush-seconds' worth).
    let file = c
        .wait_archived(archive.path(), &format!("{pod}_{uid}"), ".log.gz")
        .await;
    let mut log = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(&file).unwrap()),
        &mut log,
    )
    .unwrap();
    // Whole lines from line 1 on; the last may have been cut by the kill.
    let lines = printed(&log);
    let n = lines.len();
    assert!(n > 0, "{log}");
    assert_eq!(lines[..n - 1], numbered(n - 1)[..], "{log}");
    assert!(format!("line {n}").starts_with(&lines[n - 1]), "{log}");
    assert!(
        log.ends_with("what it printed after this was not kept]\n"),
        "{log}"
    );
}
