//! The real `tkt` against the dev cluster (the fake API server, podman as
//! its kubelet and the real controller): `tkt run --cluster` with its logs
//! and exit code, `--detach` then `logs -f` through cut watches and log
//! streams, Ctrl-C with a terminal (asks, cancels) and without (detaches),
//! `cancel`, list and describe formats,
//! `rerun --from-failed`, `pipeline start`, `delete`.
//!
//! `tkt` is the one cargo built beside the controller for this test run
//! (`cargo test --workspace` builds both), or `TEKTITE_TEST_TKT`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Cluster, TEKTON, podman_ready, repo};

fn tkt_path() -> PathBuf {
    let p = std::env::var_os("TEKTITE_TEST_TKT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_BIN_EXE_tektite-controller")).with_file_name("tkt")
        });
    assert!(
        p.exists(),
        "{} is missing: run the whole workspace's tests (cargo test --workspace), \
         or build it (cargo build -p tektite-cli) or set TEKTITE_TEST_TKT",
        p.display()
    );
    p
}

pub(super) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Cluster {
    /// `tkt` with this cluster's kubeconfig, in the repository.
    pub(super) fn tkt_command(&self, args: &[&str]) -> Command {
        let kubeconfig = self.api.kubeconfig(self.dir.path()).unwrap();
        let mut cmd = Command::new(tkt_path());
        cmd.args(args)
            .current_dir(repo())
            .env("KUBECONFIG", kubeconfig)
            .env("NO_COLOR", "1")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `tkt` to its end (off the runtime's threads); bounded.
    pub(super) async fn tkt(&self, args: &[&str]) -> Output {
        let child = self.tkt_command(args).spawn().unwrap();
        let what = args.join(" ");
        tokio::task::spawn_blocking(move || wait_bounded(child, &what))
            .await
            .unwrap()
    }
}

fn wait_bounded(mut child: std::process::Child, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(240) {
            let _ = child.kill();
            panic!("tkt {what} did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The name of the one PipelineRun, once its `wait` task has a TaskRun
/// (`pipeline-long.yaml` under way).
async fn running_long(c: &Cluster) -> String {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "pipeline-long.yaml never started:\n{}",
            c.log()
        );
        let runs = c.api.shared.list(TEKTON, "pipelineruns");
        if let Some(r) = runs.first()
            && let Some(n) = r["metadata"]["name"].as_str()
            && c.children(n).contains_key("wait")
        {
            return n.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The run's name from `--detach`'s output.
fn detached(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    text(&o.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tkt_run_on_the_cluster_follows_logs_and_exits_with_the_outcome() {
    if !podman_ready() {
        return;
    }
    let c = Cluster::start(&[]).await;
    let ok = c
        .tkt(&["run", "--cluster", "-f", "tests/runs/pipeline-flow.yaml"])
        .await;
    let out = text(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{out}{}", text(&ok.stderr));
    assert!(
        out.contains("[verify : check] verify sha256:abc built"),
        "{out}"
    );
    assert!(
        out.contains("[report : print] report Completed prod=None"),
        "{out}"
    );
    // As a local run shows it: each task's start, its lines, its end.
    let at = |what: &str| {
        out.find(what)
            .unwrap_or_else(|| panic!("{what:?} in:\n{out}"))
    };
    assert!(at("task verify started") < at("[verify : check]"), "{out}");
    assert!(
        at("[verify : check]") < at("task verify Succeeded"),
        "{out}"
    );
    at("task deploy-prod skipped: When Expressions evaluated to false");
    assert!(
        text(&ok.stderr).contains("Completed: Tasks Completed: 3"),
        "{}",
        text(&ok.stderr)
    );

    // A failing run exits 1; -o json prints it (logs go to stderr).
    let failed = c
        .tkt(&[
            "run",
            "-n",
            "default",
            "-f",
            "tests/runs/pipeline-retries.yaml",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    let v: Value = serde_json::from_slice(&failed.stdout).expect("the run as JSON");
    assert_eq!(super::condition(&v).0, "False");
    assert!(
        text(&failed.stderr).contains("[flaky : try] second attempt"),
        "{}",
        text(&failed.stderr)
    );

    // A run for another namespace than the one given is refused, naming it.
    let other = c.dir.path().join("other.yaml");
    let flow = std::fs::read_to_string(repo().join("tests/runs/pipeline-flow.yaml")).unwrap();
    std::fs::write(
        &other,
        flow.replace(
            "  generateName: flow-",
            "  generateName: flow-\n  namespace: prod",
        ),
    )
    .unwrap();
    let wrong = c
        .tkt(&["run", "-n", "default", "-f", other.to_str().unwrap()])
        .await;
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        text(&wrong.stderr).contains(
            "metadata.namespace \"prod\" is not the target namespace (\"default\"): use -n prod"
        ),
        "{}",
        text(&wrong.stderr)
    );

    // Invalid input is refused before anything is created, naming the file.
    let bad = c.tkt(&["run", "--cluster", "-f", "-"]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("<stdin>"),
        "{}",
        text(&bad.stderr)
    );
}

/// A pipeline that prints numbered lines for a while, in two tasks at once.
const COUNTING: &str = r#"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  generateName: counting-
spec:
  pipelineSpec:
    tasks:
      - name: a
        taskSpec:
          steps:
            - name: count
              image: localhost/tektite/busybox:latest
              script: |
                for i in $(seq 1 40); do echo "a line $i"; sleep 0.1; done
            - name: last
              image: localhost/tektite/busybox:latest
              script: printf 'a no newline at the end'
      - name: b
        taskSpec:
          steps:
            - name: count
              image: localhost/tektite/busybox:latest
              script: |
                for i in $(seq 1 40); do echo "b line $i"; sleep 0.1; done
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_then_logs_follow_through_cut_watches_without_missing_or_repeating_a_line() {
    if !podman_ready() {
        return;
    }
    let c = Cluster::start(&[]).await;
    let file = c.dir.path().join("counting.yaml");
    std::fs::write(&file, COUNTING).unwrap();
    let name = detached(
        &c.tkt(&["run", "--cluster", "--detach", "-f", file.to_str().unwrap()])
            .await,
    );
    let follower = c
        .tkt_command(&["pr", "logs", "-f", &name, "--cluster"])
        .spawn()
        .unwrap();
    let follow = tokio::task::spawn_blocking(move || wait_bounded(follower, "pr logs -f"));
    // Cut every watch and log stream a few times while it runs.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.api.shared.cut();
    }
    let o = follow.await.unwrap();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    for task in ["a", "b"] {
        let mine: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with(&format!("[{task} : count] ")))
            .collect();
        let want: Vec<String> = (1..=40)
            .map(|i| format!("[{task} : count] {task} line {i}"))
            .collect();
        assert_eq!(mine, want, "every line of {task} once, in order:\n{out}");
    }
    assert_eq!(
        out.matches("[a : last] a no newline at the end\n").count(),
        1,
        "{out}"
    );
    // Following a finished run prints it all and exits.
    let again = c.tkt(&["pr", "logs", "-f", &name, "-n", "default"]).await;
    assert_eq!(again.status.code(), Some(0));
    // ... in order (a's lines, then b's), each step's log ended by an
    // empty line, as without -f.
    let mut seen: Vec<&str> = text(&again.stdout)
        .leak()
        .lines()
        .filter(|l| !l.is_empty())
        .collect();
    let mut want: Vec<&str> = out.lines().collect();
    assert_eq!(seen.len(), want.len());
    seen.sort_unstable();
    want.sort_unstable();
    assert_eq!(seen, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_detaches_cancel_stops_and_list_describe_delete_work_on_the_cluster() {
    if !podman_ready() {
        return;
    }
    let c = Cluster::start(&[]).await;
    // Ctrl-C without a terminal: tkt leaves the run going, and says so.
    let child = c
        .tkt_command(&["run", "--cluster", "-f", "tests/runs/pipeline-long.yaml"])
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let name = running_long(&c).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let o = tokio::task::spawn_blocking(move || wait_bounded(child, "run"))
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(130));
    assert!(
        text(&o.stderr).contains("goes on running on the cluster"),
        "{}",
        text(&o.stderr)
    );
    let still = c.get(TEKTON, "pipelineruns", "default", &name).unwrap();
    assert_eq!(super::condition(&still).0, "Unknown", "{still}");

    // list: the local columns; -o name; describe -o json.
    let list = text(&c.tkt(&["pr", "list", "--cluster"]).await.stdout);
    assert!(list.starts_with("NAME"), "{list}");
    assert!(list.contains(&name) && list.contains("Running"), "{list}");
    let all = text(&c.tkt(&["pr", "list", "-A"]).await.stdout);
    assert!(all.starts_with("NAMESPACE   NAME"), "{all}");
    assert!(
        all.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("default ")),
        "{all}"
    );
    let names = text(&c.tkt(&["pr", "list", "-A", "-o", "name"]).await.stdout);
    assert_eq!(names.trim(), format!("pipelinerun.tekton.dev/{name}"));

    // A run that has not finished is deleted only with --force.
    let refused = c.tkt(&["pr", "delete", &name, "--cluster"]).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("has not finished"),
        "{}",
        text(&refused.stderr)
    );
    assert!(c.get(TEKTON, "pipelineruns", "default", &name).is_some());

    let cancel = c.tkt(&["pr", "cancel", &name, "-n", "default"]).await;
    assert_eq!(cancel.status.code(), Some(0), "{}", text(&cancel.stderr));
    let done = c.done("pipelineruns", "default", &name).await;
    assert_eq!(super::condition(&done).1, "Cancelled", "{done}");
    let again = c.tkt(&["pr", "cancel", &name, "-n", "default"]).await;
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("has already finished"));
    let desc = c
        .tkt(&["pr", "describe", &name, "-n", "default", "-o", "json"])
        .await;
    let v: Value = serde_json::from_slice(&desc.stdout).unwrap();
    assert_eq!(v["metadata"]["name"], name.as_str());
    let text_desc = text(
        &c.tkt(&["pr", "describe", "--last", "--cluster"])
            .await
            .stdout,
    );
    assert!(
        text_desc.contains(&format!("Name:        {name}")),
        "{text_desc}"
    );
    assert!(text_desc.contains("Cancelled"), "{text_desc}");
    let missing = c.tkt(&["pr", "describe", "nope", "--cluster"]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("pipelinerun \"nope\" not found in namespace \"default\"")
    );

    // delete takes the run's TaskRuns with it (owner references).
    assert!(!c.children(&name).is_empty());
    let del = c.tkt(&["pr", "delete", &name, "--cluster"]).await;
    assert_eq!(del.status.code(), Some(0), "{}", text(&del.stderr));
    assert!(c.get(TEKTON, "pipelineruns", "default", &name).is_none());
    assert!(c.children(&name).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_from_failed_reuses_the_first_task_and_start_runs_a_pipeline_on_the_cluster() {
    if !podman_ready() {
        return;
    }
    let c = Cluster::start(&[]).await;
    let first = c
        .tkt(&[
            "run",
            "--cluster",
            "-f",
            "tests/runs/pipeline-rerun.yaml",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    let old: Value = serde_json::from_slice(&first.stdout).unwrap();
    let old_name = old["metadata"]["name"].as_str().unwrap().to_string();
    let stamp = c.children(&old_name)["first"]["status"]["results"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();

    let rerun = c
        .tkt(&["pr", "rerun", &old_name, "--from-failed", "--cluster"])
        .await;
    let out = text(&rerun.stdout);
    assert_eq!(rerun.status.code(), Some(0), "{out}{}", text(&rerun.stderr));
    // `first` did not run again; its result and its file (the old run's
    // claim, bound again) reached the tasks after it.
    assert!(!out.contains("first made"), "{out}");
    assert!(
        out.contains(&format!(
            "[second : try] second succeeds, first's file: {stamp}"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("[last : print] last got {stamp}")),
        "{out}"
    );
    let firsts = c
        .api
        .shared
        .list(TEKTON, "taskruns")
        .into_iter()
        .filter(|t| t["metadata"]["labels"]["tekton.dev/pipelineTask"] == "first")
        .count();
    assert_eq!(firsts, 1, "first ran once in all");
    let runs = c.api.shared.list(TEKTON, "pipelineruns");
    let new = runs
        .iter()
        .find(|r| r["metadata"]["name"] != old_name.as_str())
        .unwrap();
    assert_eq!(super::condition(new).0, "True");
    assert_eq!(super::results(new)["stamp"], stamp.as_str());
    let new_name = new["metadata"]["name"].as_str().unwrap();
    let desc = text(
        &c.tkt(&["pr", "describe", new_name, "--cluster"])
            .await
            .stdout,
    );
    assert!(
        desc.contains(&format!(
            "Reused (not run again: from pipelinerun {old_name})"
        )),
        "{desc}"
    );

    // A plain rerun of that rerun gets the workspace as first given (a
    // claim template), not the claim --from-failed bound.
    let again = c
        .tkt(&["pr", "rerun", new_name, "--cluster", "--detach"])
        .await;
    let third = detached(&again);
    let v = c.get(TEKTON, "pipelineruns", "default", &third).unwrap();
    assert!(
        v["spec"]["workspaces"][0]
            .get("volumeClaimTemplate")
            .is_some(),
        "{v}"
    );

    // A Task and a Pipeline in one file: the Pipeline runs; nothing is
    // sent when its param has no value.
    let both = c.dir.path().join("both.yaml");
    std::fs::write(
        &both,
        format!(
            "{}\n---\n{}",
            ECHO_TASK,
            super::HELLO_PIPELINE.replace("name: hello", "name: hello-both")
        ),
    )
    .unwrap();
    let refused = c
        .tkt(&["run", "--cluster", "-f", both.to_str().unwrap()])
        .await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("pipeline hello-both needs a value for param(s) who"),
        "{}",
        text(&refused.stderr)
    );
    assert!(
        c.get(TEKTON, "pipelines", "default", "hello-both")
            .is_none()
    );
    assert!(c.get(TEKTON, "tasks", "default", "echo").is_none());
    let ran = c
        .tkt(&[
            "run",
            "--cluster",
            "-f",
            both.to_str().unwrap(),
            "-p",
            "who=both",
            "--detach",
            "-o",
            "json",
        ])
        .await;
    let created: Value = serde_json::from_slice(&ran.stdout).expect("the run created, as JSON");
    assert_eq!(created["spec"]["pipelineRef"]["name"], "hello-both");
    assert!(c.get(TEKTON, "tasks", "default", "echo").is_some());

    // A Pipeline applied by `tkt run`, then started by name.
    let file = c.dir.path().join("hello.yaml");
    std::fs::write(&file, super::HELLO_PIPELINE).unwrap();
    let applied = c
        .tkt(&[
            "run",
            "--cluster",
            "--detach",
            "-f",
            file.to_str().unwrap(),
            "-p",
            "who=one",
        ])
        .await;
    detached(&applied);
    assert!(c.get(TEKTON, "pipelines", "default", "hello").is_some());
    let missing = c.tkt(&["p", "start", "hello", "--cluster"]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("param(s) who"),
        "{}",
        text(&missing.stderr)
    );
    let started = c
        .tkt(&[
            "p",
            "start",
            "hello",
            "--cluster",
            "-p",
            "who=two",
            "--showlog",
        ])
        .await;
    assert_eq!(started.status.code(), Some(0), "{}", text(&started.stderr));
    assert!(
        text(&started.stdout).contains("[greet : say] hello two!"),
        "{}",
        text(&started.stdout)
    );
    let ls = text(&c.tkt(&["p", "ls", "--cluster"]).await.stdout);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("hello ") && l.contains("hello-run-")),
        "{ls}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_on_a_terminal_asks_and_cancels_the_run_on_the_cluster() {
    if !podman_ready() {
        return;
    }
    let c = Cluster::start(&[]).await;
    // `script` gives tkt a terminal; a ^C written to it is the user's Ctrl-C.
    let line = format!(
        "{} run --cluster -f tests/runs/pipeline-long.yaml",
        tkt_path().display()
    );
    // The environment tkt gets elsewhere (KUBECONFIG, NO_COLOR), through script.
    let cmd = c.tkt_command(&[]);
    let mut script = Command::new("script");
    script
        .args(["-qec", &line, "/dev/null"])
        .current_dir(repo());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let mut child = script
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (bsdutils) runs tkt on a terminal");
    let name = running_long(&c).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut stdin = child.stdin.take().unwrap();
    {
        use std::io::Write as _;
        stdin.write_all(b"\x03").unwrap();
        stdin.flush().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    {
        use std::io::Write as _;
        stdin.write_all(b"y\n").unwrap();
        stdin.flush().unwrap();
    }
    let o = tokio::task::spawn_blocking(move || {
        let o = wait_bounded(child, "script tkt run");
        drop(stdin);
        o
    })
    .await
    .unwrap();
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("cancel pipelinerun {name} on the cluster? [y/N]")),
        "{out}"
    );
    assert!(out.contains("following it until it stops"), "{out}");
    assert_eq!(o.status.code(), Some(130), "{out}");
    let done = c.done("pipelineruns", "default", &name).await;
    assert_eq!(super::condition(&done).1, "Cancelled", "{done}");
}

/// A Task beside a Pipeline in one file (`tkt run` runs the Pipeline).
const ECHO_TASK: &str = r#"apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: echo
spec:
  steps:
    - name: say
      image: localhost/tektite/busybox:latest
      script: echo hi"#;

/// `tkt dora --cluster`: a labelled PipelineRun run on the cluster is a
/// deployment, its lead time from its commit-time result; the controller
/// counts it in its deployment metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tkt_dora_on_the_cluster_counts_a_labelled_run() {
    if !podman_ready() {
        return;
    }
    let c = Cluster::start(&[]).await;
    let none = c.tkt(&["dora", "--cluster"]).await;
    assert_eq!(none.status.code(), Some(0), "{}", text(&none.stderr));
    assert!(
        text(&none.stdout).contains("No deployments found"),
        "{}",
        text(&none.stdout)
    );
    let run = c
        .tkt(&["run", "--cluster", "-f", "tests/runs/dora-deploy.yaml"])
        .await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let o = c.tkt(&["dora", "--cluster", "-o", "json"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("the indicators as JSON");
    let dev = &v["environments"][0];
    assert_eq!(dev["environment"], "dev", "{v}");
    assert_eq!(dev["deployments"], 1, "{v}");
    assert_eq!(dev["changeFailureRate"], 0.0, "{v}");
    let lead = dev["leadTime"]["medianSeconds"].as_f64().unwrap();
    assert!((5400.0..5400.0 + 120.0).contains(&lead), "{v}");
    // Counted right after the status that ended the run is written.
    let counted = r#"tektite_deployments_total{environment="dev",status="succeeded"} 1"#;
    let start = Instant::now();
    let mut metrics = c.scrape().await;
    while !metrics.lines().any(|l| l == counted) && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = c.scrape().await;
    }
    for line in [
        r#"tektite_deployments_total{environment="dev",status="succeeded"} 1"#,
        r#"tektite_deployment_lead_time_seconds_count{environment="dev"} 1"#,
        r#"tektite_deployment_lead_time_seconds_bucket{le="3600.0",environment="dev"} 0"#,
        r#"tektite_deployment_lead_time_seconds_bucket{le="7200.0",environment="dev"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:
{metrics}"
        );
    }
    // A run without a commit-time result: its clone TaskRun's
    // committer-date gives the lead time.
    let clone_only = serde_json::json!({
        "apiVersion": TEKTON, "kind": "PipelineRun",
        "metadata": {"name": "deploy-stage", "labels": {"tektite.dev/environment": "stage"}},
        "spec": {"pipelineSpec": {"tasks": [{"name": "clone", "taskSpec": {
            "results": [{"name": "committer-date"}],
            "steps": [{"name": "s", "image": "localhost/tektite/busybox:latest",
                       "script": "printf '%s' $(( $(date +%s) - 5400 )) > $(results.committer-date.path)"}]}}]}}
    });
    c.create("pipelineruns", "ci", clone_only);
    c.done("pipelineruns", "ci", "deploy-stage").await;
    let counted =
        r#"tektite_deployment_lead_time_seconds_bucket{le="7200.0",environment="stage"} 1"#;
    let start = Instant::now();
    let mut metrics = c.scrape().await;
    while !metrics.lines().any(|l| l == counted) && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = c.scrape().await;
    }
    assert!(
        metrics.lines().any(|l| l == counted),
        "no {counted:?} in:\n{metrics}"
    );
}
