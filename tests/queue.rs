//! Concurrency control on a laptop: `tkt run` invocations sharing a run
//! store honour `tektite.dev/concurrency-key` and its strategies as the
//! controller does. Real `tkt` processes on the process runtime; a holder
//! or waiter is told apart by a marker in its step's command line
//! (`sleep 37NN`, a number no other test uses).

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod util;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{Scratch, reason, text, wait_guarded};

/// A Pipeline keyed on its `environment` param (`annotations` added), whose
/// task sleeps `$(params.seconds)` and whose finally task says it ran, and
/// a run of it named `name`.
fn pipeline_and_run(name: &str, env: &str, seconds: &str, annotations: &str) -> String {
    format!(
        r#"apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: deploy
  annotations:
    tektite.dev/concurrency-key: deploy-$(params.environment)
{annotations}spec:
  params:
    - {{name: environment}}
    - {{name: seconds}}
  tasks:
    - name: deploy
      params: [{{name: seconds, value: $(params.seconds)}}]
      taskSpec:
        params: [{{name: seconds}}]
        steps:
          - {{name: s, image: busybox, script: "sleep $(params.seconds)"}}
  finally:
    - name: report
      taskSpec:
        steps:
          - {{name: s, image: busybox, script: "echo reported"}}
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: {name}
spec:
  pipelineRef: {{name: deploy}}
  params:
    - {{name: environment, value: {env}}}
    - {{name: seconds, value: "{seconds}"}}
"#
    )
}

fn start(s: &Scratch, file: &str) -> Child {
    util::tkt_run("process")
        .args(["--state-dir", &s.state_arg(), "-f", file, "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn record(s: &Scratch, name: &str) -> Value {
    std::fs::read(s.state().join("pipelineruns").join(format!("{name}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Waits (bounded) until `f` holds for run `name`'s record; a guard, not a
/// timing assertion.
fn until(s: &Scratch, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let r = record(s, name);
        if f(&r) {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name}: not {what}: {r}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn admitted(r: &Value) -> bool {
    r["status"]["concurrency"]["admittedTime"].is_string()
}

fn time(v: &Value) -> k8s_openapi::jiff::Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

fn condition(r: &Value) -> (String, String) {
    let c = r["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Succeeded"))
        .cloned()
        .unwrap_or_default();
    (
        c["reason"].as_str().unwrap_or("").into(),
        c["message"].as_str().unwrap_or("").into(),
    )
}

#[test]
fn runs_sharing_a_store_take_turns_under_a_key_and_say_what_they_wait_for() {
    let s = Scratch::new("queue-turns");
    let a = start(
        &s,
        &s.file("a.yaml", &pipeline_and_run("a", "prod", "3701", "")),
    );
    until(&s, "a", "admitted", admitted);
    let b = start(
        &s,
        &s.file("b.yaml", &pipeline_and_run("b", "prod", "1", "")),
    );
    let waiting = until(&s, "b", "queued", |r| condition(r).0 == "PipelineRunQueued");
    assert_eq!(
        condition(&waiting).1,
        "waiting for concurrency key \"deploy-prod\": position 1 of 1, held by a"
    );
    let list = util::tkt(&["pr", "list", "--state-dir", &s.state_arg()]);
    let row = text(&list.stdout)
        .lines()
        .find(|l| l.starts_with("b "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(row.ends_with("Queued(1/1)"), "{}", text(&list.stdout));
    let described =
        text(&util::tkt(&["pr", "describe", "b", "--state-dir", &s.state_arg()]).stdout);
    for want in [
        "Concurrency",
        " Key:",
        "deploy-prod",
        "1 (queue)",
        "for concurrency key \"deploy-prod\": position 1 of 1, held by a",
    ] {
        assert!(described.contains(want), "{want}:\n{described}");
    }
    // Another key does not wait.
    let c = start(
        &s,
        &s.file("c.yaml", &pipeline_and_run("c", "staging", "0", "")),
    );
    let c = wait_guarded(c, "the staging run");
    assert_eq!(c.status.code(), Some(0), "{}", text(&c.stderr));
    assert!(
        !admitted(&record(&s, "b")),
        "b started while a held the key"
    );

    // a ends (cancelled from another terminal): b starts, after it.
    let o = util::tkt(&["pr", "cancel", "a", "--state-dir", &s.state_arg()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let a = wait_guarded(a, "the first prod run");
    assert_eq!(a.status.code(), Some(1), "{}", text(&a.stderr));
    let b = wait_guarded(b, "the second prod run");
    assert_eq!(b.status.code(), Some(0), "{}", text(&b.stderr));
    assert!(
        text(&b.stderr).contains(
            "pipelinerun b waiting for concurrency key \"deploy-prod\": position 1 of 1, held by a"
        ),
        "{}",
        text(&b.stderr)
    );
    let (a, b) = (record(&s, "a"), record(&s, "b"));
    assert!(
        time(&b["status"]["concurrency"]["admittedTime"]) >= time(&a["status"]["completionTime"])
    );
    assert!(
        b["status"]["concurrency"]["waitSeconds"].as_f64().unwrap() > 0.0,
        "{b}"
    );
    assert!(
        s.leftovers().iter().all(|l| l == "live/queue.lock"),
        "{:?}",
        s.leftovers()
    );
}

#[test]
fn ctrl_c_while_queued_cancels_only_the_waiting_run() {
    let s = Scratch::new("queue-ctrl-c");
    let a = start(
        &s,
        &s.file("a.yaml", &pipeline_and_run("a", "prod", "2", "")),
    );
    until(&s, "a", "admitted", admitted);
    let b = start(
        &s,
        &s.file("b.yaml", &pipeline_and_run("b", "prod", "3702", "")),
    );
    until(&s, "b", "queued", |r| condition(r).0 == "PipelineRunQueued");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(b.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let b = wait_guarded(b, "the interrupted waiting run");
    assert_eq!(b.status.code(), Some(130), "{}", text(&b.stderr));
    let out = util::object(&b);
    assert_eq!(reason(&out), "Cancelled", "{out}");
    assert!(
        condition(&out).1.contains("cancelled while queued"),
        "{out}"
    );
    assert!(
        out["status"]["childReferences"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{out}"
    );
    let a = wait_guarded(a, "the holder");
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
}

#[test]
fn cancel_in_progress_lets_the_newest_local_run_win() {
    let s = Scratch::new("queue-cancel-in-progress");
    let newest = "    tektite.dev/concurrency-strategy: cancel-in-progress\n";
    let a = start(
        &s,
        &s.file("a.yaml", &pipeline_and_run("a", "pr-7", "3703", newest)),
    );
    until(&s, "a", "admitted", admitted);
    let b = start(
        &s,
        &s.file("b.yaml", &pipeline_and_run("b", "pr-7", "0", newest)),
    );
    let a = wait_guarded(a, "the superseded run");
    assert_eq!(a.status.code(), Some(1), "{}", text(&a.stderr));
    let a = util::object(&a);
    assert_eq!(reason(&a), "Cancelled", "{a}");
    assert_eq!(a["spec"]["status"], "CancelledRunFinally", "{a}");
    let o = util::tkt(&["pr", "logs", "a", "--state-dir", &s.state_arg()]);
    assert!(
        text(&o.stdout).contains("reported"),
        "finally ran: {}",
        text(&o.stdout)
    );
    let b = wait_guarded(b, "the newest run");
    assert_eq!(b.status.code(), Some(0), "{}", text(&b.stderr));
    assert!(
        text(&b.stderr).contains("pipelinerun a: cancelled by newer PipelineRun \"b\""),
        "{}",
        text(&b.stderr)
    );
}

#[test]
fn a_holder_killed_with_kill_9_frees_its_place() {
    let s = Scratch::new("queue-kill-9");
    let mut a = start(
        &s,
        &s.file("a.yaml", &pipeline_and_run("a", "prod", "3704", "")),
    );
    until(&s, "a", "admitted", admitted);
    let b = start(
        &s,
        &s.file("b.yaml", &pipeline_and_run("b", "prod", "0", "")),
    );
    until(&s, "b", "queued", |r| condition(r).0 == "PipelineRunQueued");
    a.kill().unwrap();
    let _ = a.wait();
    let b = wait_guarded(b, "the waiting run");
    assert_eq!(b.status.code(), Some(0), "{}", text(&b.stderr));
    let a = until(&s, "a", "recovered", |r| {
        !matches!(condition(r).0.as_str(), "" | "Running" | "Started")
    });
    assert_eq!(condition(&a).0, "TktExited", "{a}");
}

#[test]
fn invalid_concurrency_annotations_are_refused_before_anything_runs() {
    let s = Scratch::new("queue-invalid");
    // A value the annotation cannot take: refused by validation, with its line.
    let bad = "    tektite.dev/concurrency-limit: \"0\"\n";
    let f = s.file("bad.yaml", &pipeline_and_run("a", "prod", "0", bad));
    let o = wait_guarded(start(&s, &f), "an invalid run");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains(
            "bad.yaml:7: Pipeline/deploy (document 1): metadata.annotations[\"tektite.dev/concurrency-limit\"]: \"0\" is not a positive integer"
        ),
        "{err}"
    );
    // A key naming a param the Pipeline lacks: refused once the run's
    // params are known, naming the run's file and the field.
    let unknown = pipeline_and_run("b", "prod", "0", "")
        .replace("deploy-$(params.environment)", "deploy-$(params.region)");
    let f = s.file("unknown.yaml", &unknown);
    let o = wait_guarded(start(&s, &f), "a run whose key cannot be resolved");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("unknown.yaml: PipelineRun b"), "{err}");
    assert!(
        err.contains("pipeline metadata.annotations[\"tektite.dev/concurrency-key\"]"),
        "{err}"
    );
    assert!(s.records("pipelineruns").is_empty());
}

#[test]
fn a_local_run_whose_timeout_passes_while_queued_ends_without_starting() {
    let s = Scratch::new("queue-timeout");
    let a = start(
        &s,
        &s.file("a.yaml", &pipeline_and_run("a", "prod", "3705", "")),
    );
    until(&s, "a", "admitted", admitted);
    let f = s.file("b.yaml", &pipeline_and_run("b", "prod", "0", ""));
    let b = util::tkt_run("process")
        .args([
            "--state-dir",
            &s.state_arg(),
            "-f",
            &f,
            "-o",
            "json",
            "--timeout",
            "2s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = wait_guarded(b, "a run that times out in the queue");
    assert_eq!(b.status.code(), Some(1), "{}", text(&b.stderr));
    let out = util::object(&b);
    assert_eq!(reason(&out), "PipelineRunTimeout", "{out}");
    assert!(condition(&out).1.contains("it was still queued"), "{out}");
    assert!(
        out["status"]["childReferences"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{out}"
    );
    assert!(
        !text(&b.stderr).contains("pipelinerun b started"),
        "{}",
        text(&b.stderr)
    );
    let o = util::tkt(&["pr", "cancel", "a", "--state-dir", &s.state_arg()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let a = wait_guarded(a, "the holder");
    assert_eq!(a.status.code(), Some(1), "{}", text(&a.stderr));
}
