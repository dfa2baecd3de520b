//! The verbs that act on runs, on the local target (the cluster target runs
//! the same code against the dev cluster: controller/controller/tests/
//! cluster/cli.rs): `logs -f` while a run goes, `cancel --grace`, `rerun
//! --from-failed`, `pipeline|task list|describe|start`, and the machine
//! output formats (`-o name|jsonl`, `-l`, several runs as one JSON array,
//! `-f -`). Host processes (`--runtime process`): no podman needed.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod util;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{Scratch, text, tkt, tkt_run, tkt_stdin, wait_guarded};

/// `tkt ARGS --state-dir S`.
fn on(s: &Scratch, args: &[&str]) -> std::process::Output {
    let state = s.state_arg();
    let mut all = args.to_vec();
    all.extend(["--state-dir", &state]);
    tkt(&all)
}

/// Waits (bounded) until `pred` holds of `tkt pr list -o json`'s items.
fn wait_list(s: &Scratch, what: &str, pred: impl Fn(&[Value]) -> bool) {
    let start = Instant::now();
    loop {
        let o = on(s, &["pr", "list", "-o", "json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if pred(v["items"].as_array().map_or(&[][..], Vec::as_slice)) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until the run's work step has said it started.
fn wait_started(s: &Scratch, run: &str) {
    let start = Instant::now();
    while !text(&on(s, &["pr", "logs", run]).stdout).contains("work started") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "work never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const FINALLY: &str = r#"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: graceful
spec:
  pipelineSpec:
    tasks:
      - name: work
        taskSpec:
          steps:
            - name: slow
              image: busybox
              script: |
                echo "work started"
                sleep 2
                echo "work finished"
      - name: after
        runAfter: [work]
        taskSpec:
          steps:
            - {name: never, image: busybox, script: echo "after ran"}
    finally:
      - name: cleanup
        taskSpec:
          steps:
            - {name: say, image: busybox, script: echo "cleanup ran"}
"#;

#[test]
fn logs_follow_a_running_run_and_cancel_grace_lets_it_finish_then_runs_finally() {
    let s = Scratch::new("lifecycle-grace");
    let file = s.file("graceful.yaml", FINALLY);
    let state = s.state_arg();
    let run = tkt_run("process")
        .args(["-f", &file, "--state-dir", &state])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_list(&s, "a running graceful", |items| !items.is_empty());
    let follow = std::process::Command::new(util::tkt_path())
        .args(["pr", "logs", "-f", "graceful", "--state-dir", &state])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the work step is under way, stop the run gracefully.
    wait_started(&s, "graceful");
    let c = on(
        &s,
        &["pr", "cancel", "graceful", "--grace", "StoppedRunFinally"],
    );
    assert_eq!(c.status.code(), Some(0), "{}", text(&c.stderr));
    assert!(
        text(&c.stdout).contains("StoppedRunFinally"),
        "{}",
        text(&c.stdout)
    );
    let followed = wait_guarded(follow, "tkt pr logs -f");
    let ran = wait_guarded(run, "tkt run");
    assert_eq!(ran.status.code(), Some(1), "{}", text(&ran.stderr));
    let lines = text(&followed.stdout);
    // The running task finished, nothing new started, finally ran; the
    // follower saw it all, once, and exits with the run's outcome.
    assert_eq!(followed.status.code(), Some(1), "{lines}");
    for l in [
        "[work : slow] work started",
        "[work : slow] work finished",
        "[cleanup : say] cleanup ran",
    ] {
        assert_eq!(lines.matches(l).count(), 1, "{l:?} in:\n{lines}");
    }
    assert!(!lines.contains("after ran"), "{lines}");
    // A finished run cannot be cancelled again.
    let again = on(&s, &["pr", "cancel", "graceful"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("has already finished"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn rerun_from_failed_reuses_the_task_that_succeeded_locally() {
    let s = Scratch::new("lifecycle-rerun");
    let ws = s.0.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let ws_flag = format!("state={}", ws.display());
    let state = s.state_arg();
    let first = tkt_run("process")
        .args([
            "-f",
            "runs/pipeline-rerun.yaml",
            "-w",
            &ws_flag,
            "--state-dir",
            &state,
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    let old = util::object(&first);
    let old_name = old["metadata"]["name"].as_str().unwrap().to_string();
    let stamp = old["status"]["childReferences"].as_array().map(Vec::len);
    assert_eq!(stamp, Some(2), "first and second ran: {old}");

    // The host directory it was given must be given again.
    let refused = on(
        &s,
        &[
            "pr",
            "rerun",
            &old_name,
            "--from-failed",
            "--runtime",
            "process",
        ],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("-w state=PATH"),
        "{}",
        text(&refused.stderr)
    );

    let entry = util::entrypoint_env();
    let again = std::process::Command::new(util::tkt_path())
        .args([
            "pr",
            "rerun",
            &old_name,
            "--from-failed",
            "--runtime",
            "process",
            "-w",
            &ws_flag,
        ])
        .args(["--state-dir", &state])
        .current_dir(util::tests_dir())
        .env("TEKTITE_ENTRYPOINT", entry)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = text(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{out}{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains(&format!("reusing from {old_name} (not run again): first"))
    );
    // `first` did not run again: no line of it, and its stamp (its result,
    // and its file in the workspace) reached the tasks after it.
    assert!(!out.contains("first made"), "{out}");
    let made = std::fs::read_to_string(ws.join("made-by-first")).unwrap();
    let made = made.trim();
    assert!(
        out.contains(&format!("second succeeds, first's file: {made}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("[last : print] last got {made}")),
        "{out}"
    );
    let trs = on(
        &s,
        &[
            "tr",
            "list",
            "-l",
            "tekton.dev/pipelineTask=first",
            "-o",
            "name",
        ],
    );
    assert_eq!(
        text(&trs.stdout).lines().count(),
        1,
        "{}",
        text(&trs.stdout)
    );
    // The new run records what it reused.
    let list = on(&s, &["pr", "list", "-o", "jsonl"]);
    let runs: Vec<Value> = text(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), 2);
    let new = runs
        .iter()
        .find(|r| r["metadata"]["name"] != old_name.as_str())
        .unwrap();
    let new_name = new["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        new["metadata"]["annotations"]["tektite.dev/rerun-of"],
        old_name.as_str()
    );
    let refs: Vec<&str> = new["status"]["childReferences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        refs.contains(&format!("{old_name}-first").as_str()),
        "{refs:?}"
    );
    let d = text(&on(&s, &["pr", "describe", new_name]).stdout);
    assert!(
        d.contains(&format!(
            "Reused (not run again: from pipelinerun {old_name})"
        )),
        "{d}"
    );
    assert!(d.contains(&format!("stamp={made}")), "{d}");
}

const HELLO: &str = r#"
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: hello
spec:
  params:
    - {name: who}
    - {name: punct, default: "!"}
  tasks:
    - name: greet
      taskSpec:
        params: [{name: who}, {name: punct}]
        steps:
          - name: say
            image: busybox
            script: echo "hello $(params.who)$(params.punct)"
      params:
        - {name: who, value: $(params.who)}
        - {name: punct, value: $(params.punct)}
"#;

/// A Task and the Pipeline that uses it, in one file.
const BOTH: &str = r#"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: echo-it
spec:
  params: [{name: msg}]
  workspaces: [{name: w}]
  steps:
    - name: say
      image: busybox
      script: echo "said $(params.msg)" | tee $(workspaces.w.path)/out
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: tour
spec:
  params: [{name: msg}]
  workspaces: [{name: shared}]
  tasks:
    - name: one
      taskRef: {name: echo-it}
      params: [{name: msg, value: $(params.msg)}]
      workspaces: [{name: w, workspace: shared}]
"#;

#[test]
fn pipeline_list_describe_and_start_from_a_task_dir() {
    let s = Scratch::new("lifecycle-start");
    let dir = s.0.join("defs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.yaml"), HELLO).unwrap();
    let d = dir.to_string_lossy().into_owned();
    let ls = on(&s, &["p", "ls", "--task-dir", &d]);
    let ls = text(&ls.stdout);
    assert!(ls.starts_with("NAME"), "{ls}");
    assert!(ls.lines().any(|l| l.starts_with("hello ")), "{ls}");
    assert!(
        ls.lines().any(|l| l.starts_with("ci-cd ")),
        "the catalog's too: {ls}"
    );

    // A param without a default must be given; the message names it.
    let missing = on(
        &s,
        &[
            "p",
            "start",
            "hello",
            "--task-dir",
            &d,
            "--runtime",
            "process",
        ],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("needs a value for param(s) who"),
        "{}",
        text(&missing.stderr)
    );
    let unknown = on(&s, &["p", "start", "nope", "--task-dir", &d]);
    assert!(
        text(&unknown.stderr).contains("pipeline \"nope\" not found"),
        "{}",
        text(&unknown.stderr)
    );

    let state = s.state_arg();
    let start_named = |name: &str, extra: &[&str]| {
        std::process::Command::new(util::tkt_path())
            .args([
                "p",
                "start",
                name,
                "--task-dir",
                &d,
                "--runtime",
                "process",
                "--state-dir",
                &state,
            ])
            .args(extra)
            .env("TEKTITE_ENTRYPOINT", util::entrypoint_env())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let start = |extra: &[&str]| start_named("hello", extra);
    let one = start(&["-p", "who=world"]);
    assert_eq!(one.status.code(), Some(0), "{}", text(&one.stderr));
    assert!(
        text(&one.stdout).contains("[greet : say] hello world!"),
        "{}",
        text(&one.stdout)
    );
    // --last takes the last run's params; -p still wins.
    let two = start(&["--last", "-p", "punct=?"]);
    assert_eq!(two.status.code(), Some(0), "{}", text(&two.stderr));
    assert!(
        text(&two.stdout).contains("[greet : say] hello world?"),
        "{}",
        text(&two.stdout)
    );

    // A Pipeline whose file holds its Task too, with a workspace: --last
    // and -w (tkn's form) start it.
    std::fs::write(dir.join("both.yaml"), BOTH).unwrap();
    let first = start_named("tour", &["-p", "msg=one", "-w", "shared=emptyDir"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let last = start_named("tour", &["--last", "-w", "name=shared,emptyDir="]);
    assert_eq!(last.status.code(), Some(0), "{}", text(&last.stderr));
    assert!(
        text(&last.stdout).contains("[one : say] said one"),
        "{}",
        text(&last.stdout)
    );
    assert!(
        std::fs::read_dir(s.state().join("rerun"))
            .unwrap()
            .next()
            .is_none(),
        "run files left"
    );

    let desc = text(&on(&s, &["p", "describe", "hello", "--task-dir", &d]).stdout);
    for want in ["Name:", "hello", "who", "punct", "greet", "PipelineRuns"] {
        assert!(desc.contains(want), "{want} in:\n{desc}");
    }
    assert_eq!(desc.matches("hello-run-").count(), 2, "{desc}");
}

#[test]
fn machine_formats_several_runs_and_standard_input() {
    let s = Scratch::new("lifecycle-formats");
    let state = s.state_arg();
    // Two runs in one `tkt run -o json`: one JSON array.
    let o = tkt_run("process")
        .args([
            "-f",
            "runs/taskrun-steps.yaml",
            "-f",
            "runs/taskrun-quick-steps.yaml",
        ])
        .args(["--state-dir", &state, "-o", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    // A run read from standard input.
    let yaml = std::fs::read_to_string(util::tests_dir().join("runs/taskrun-steps.yaml")).unwrap();
    let from_stdin = tkt_stdin(
        &[
            "run",
            "--runtime",
            "process",
            "-f",
            "-",
            "--state-dir",
            &state,
            "-o",
            "json",
        ],
        Some(&yaml),
    );
    let one: Value = serde_json::from_slice(&from_stdin.stdout).expect("the run as JSON");
    assert_eq!(one["kind"], "TaskRun", "{}", text(&from_stdin.stderr));

    let names = text(&on(&s, &["tr", "list", "-o", "name"]).stdout);
    assert_eq!(names.lines().count(), 3, "{names}");
    assert!(
        names.lines().all(|l| l.starts_with("taskrun.tekton.dev/")),
        "{names}"
    );
    let jsonl = text(&on(&s, &["tr", "list", "-o", "jsonl"]).stdout);
    assert_eq!(jsonl.lines().count(), 3);
    for l in jsonl.lines() {
        let r: Value = serde_json::from_str(l).unwrap();
        assert_eq!(r["kind"], "TaskRun");
    }
    // Label selectors; a bad one is an error naming it.
    let none = text(&on(&s, &["tr", "list", "-l", "app=none"]).stdout);
    assert_eq!(none, "No TaskRuns found\n");
    let bad = on(&s, &["tr", "list", "-l", "app in web"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("label selector \"app in web\""),
        "{}",
        text(&bad.stderr)
    );
    // -A needs a cluster: no kubeconfig here.
    let all = std::process::Command::new(util::tkt_path())
        .args(["pr", "list", "-A"])
        .env("KUBECONFIG", s.0.join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", &s.0)
        .output()
        .unwrap();
    assert_eq!(all.status.code(), Some(2));
    assert!(
        text(&all.stderr).contains("no cluster") || text(&all.stderr).contains("kubeconfig"),
        "{}",
        text(&all.stderr)
    );
}

#[test]
fn a_hard_cancel_after_a_graceful_one_stops_the_run_at_once() {
    let s = Scratch::new("lifecycle-escalate");
    let file = s.file(
        "slow.yaml",
        &FINALLY
            .replace("name: graceful", "name: slow")
            .replace("sleep 2", "sleep 60"),
    );
    let state = s.state_arg();
    let run = tkt_run("process")
        .args(["-f", &file, "--state-dir", &state])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_started(&s, "slow");
    let graceful = on(
        &s,
        &["pr", "cancel", "slow", "--grace", "StoppedRunFinally"],
    );
    assert_eq!(
        graceful.status.code(),
        Some(0),
        "{}",
        text(&graceful.stderr)
    );
    std::thread::sleep(Duration::from_millis(800));
    // Still running (its task is let finish): a plain cancel stops it.
    let hard = on(&s, &["pr", "cancel", "slow"]);
    assert_eq!(hard.status.code(), Some(0), "{}", text(&hard.stderr));
    let ran = wait_guarded(run, "tkt run");
    let out = text(&ran.stdout);
    assert_eq!(ran.status.code(), Some(1), "{out}");
    assert!(
        !out.contains("work finished"),
        "the 60 s step was stopped:\n{out}"
    );
    let v: Value =
        serde_json::from_slice(&on(&s, &["pr", "describe", "slow", "-o", "json"]).stdout).unwrap();
    assert_eq!(util::reason(&v), "Cancelled", "{v}");
}

#[test]
fn a_param_a_run_lacks_can_come_from_p() {
    let s = Scratch::new("lifecycle-p");
    let file = s.file(
        "np.yaml",
        "apiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata:\n  generateName: np-\nspec:\n  pipelineSpec:\n    params: [{name: env}]\n    tasks:\n      - name: t\n        params: [{name: env, value: $(params.env)}]\n        taskSpec:\n          params: [{name: env}]\n          steps: [{name: s, image: busybox, script: 'echo env=$(params.env)'}]\n",
    );
    let state = s.state_arg();
    let without = tkt_run("process")
        .args(["-f", &file, "--state-dir", &state])
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(2));
    assert!(
        text(&without.stderr).contains("missing value for required param of the Pipeline: env")
    );
    let with = tkt_run("process")
        .args(["-f", &file, "--state-dir", &state, "-p", "env=prod"])
        .output()
        .unwrap();
    assert_eq!(with.status.code(), Some(0), "{}", text(&with.stderr));
    assert!(
        text(&with.stdout).contains("[t : s] env=prod"),
        "{}",
        text(&with.stdout)
    );
}
