//! `tkt pipelinerun|taskrun list|describe|logs|delete` on run stores written
//! with `tektite_local::store::Store` in temporary directories.
//!
//! Start times are set relative to the real clock (hours back), so the
//! relative ages printed are deterministic; the age and duration formatters
//! themselves are unit-tested with an explicit `now` in `cli/src/inspect.rs`.

// Helpers shared with the other black-box tests; not all are used here.
#[allow(dead_code)]
mod util;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ContainerStateTerminated;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tektite_api::v1::{
    ChildStatusReference, Condition, Param, ParamValue, PipelineRef, PipelineRun,
    PipelineRunResult, PipelineRunSpec, PipelineRunStatus, RunResult, SkippedTask, StepState,
    TaskRef, TaskRun, TaskRunSpec, TaskRunStatus,
};
use tektite_local::store::Store;
use util::{stdout, tkt};

/// A fresh state directory for one test.
fn state_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tkt-inspect-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Runs `tkt` with `--state-dir dir` appended.
fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    let d = dir.to_string_lossy().into_owned();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--state-dir", &d]);
    tkt(&all)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `minutes` minutes before now.
fn ago(minutes: i64) -> Time {
    Time(Timestamp::now() - SignedDuration::from_mins(minutes))
}

fn plus(t: &Time, secs: i64) -> Time {
    Time(t.0 + SignedDuration::from_secs(secs))
}

fn cond(status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: "Succeeded".into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()).filter(|m: &String| !m.is_empty()),
        ..Condition::default()
    }
}

fn pr(name: &str, start: Option<Time>, secs: Option<i64>, c: Option<Condition>) -> PipelineRun {
    let mut pr = PipelineRun::new(name, PipelineRunSpec::default());
    if start.is_some() || c.is_some() {
        pr.status = Some(PipelineRunStatus {
            completion_time: start.as_ref().zip(secs).map(|(s, d)| plus(s, d)),
            start_time: start,
            conditions: c.into_iter().collect(),
            ..PipelineRunStatus::default()
        });
    }
    pr
}

fn step(name: &str, reason: &str, code: i32) -> StepState {
    StepState {
        name: name.into(),
        container: Some(format!("step-{name}")),
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.into()),
            ..ContainerStateTerminated::default()
        }),
        ..StepState::default()
    }
}

/// A TaskRun of PipelineRun `pipeline_run` for `task`, with steps and logs.
fn child(
    store: &Store,
    pipeline_run: &str,
    task: &str,
    start: Time,
    steps: &[(&str, &str)],
    c: Condition,
) -> TaskRun {
    let name = format!("{pipeline_run}-{task}");
    let mut tr = TaskRun::new(&name, TaskRunSpec::default());
    tr.metadata.labels = Some(
        [
            (
                "tekton.dev/pipelineRun".to_string(),
                pipeline_run.to_string(),
            ),
            ("tekton.dev/pipelineTask".to_string(), task.to_string()),
        ]
        .into(),
    );
    tr.status = Some(TaskRunStatus {
        completion_time: Some(plus(&start, 10)),
        start_time: Some(start),
        conditions: vec![c],
        steps: steps.iter().map(|(s, _)| step(s, "Completed", 0)).collect(),
        ..TaskRunStatus::default()
    });
    store.save_task_run(&tr).expect("write the test store");
    for (s, text) in steps {
        let mut log = store
            .open_log(&name, &format!("step-{s}"))
            .expect("write the test store");
        log.write_all(text.as_bytes())
            .expect("write the test store");
    }
    tr
}

// ---------------------------------------------------------------- list

#[test]
fn list_is_newest_first_with_placeholders() {
    let d = state_dir("list");
    let s = Store::open(Some(&d)).unwrap();
    s.save_pipeline_run(&pr(
        "old",
        Some(ago(185)),
        Some(90),
        Some(cond("True", "Succeeded", "")),
    ))
    .unwrap();
    s.save_pipeline_run(&pr(
        "new",
        Some(ago(125)),
        None,
        Some(cond("Unknown", "Running", "")),
    ))
    .unwrap();
    // A minute older than "new": the same minute could tie, and the order
    // would then depend on when each `ago` was computed.
    s.save_pipeline_run(&pr(
        "timed-out",
        Some(ago(126)),
        Some(3600),
        Some(cond("False", "PipelineRunTimeout", "")),
    ))
    .unwrap();
    s.save_pipeline_run(&pr("pending", None, None, None))
        .unwrap();

    let o = run(&d, &["pipelinerun", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "\
NAME        STARTED       DURATION   STATUS
new         2 hours ago   ---        Running
timed-out   2 hours ago   1h0m0s     Failed(PipelineRunTimeout)
old         3 hours ago   1m30s      Succeeded
pending     ---           ---        ---
"
    );

    // --last, --limit, --no-headers, the `pr ls` aliases, the flag before
    // the subcommand.
    let o = run(&d, &["pr", "ls", "--last"]);
    assert_eq!(
        stdout(&o),
        "NAME   STARTED       DURATION   STATUS\nnew    2 hours ago   ---        Running\n"
    );
    let o = run(&d, &["pr", "list", "--limit", "2", "--no-headers"]);
    assert_eq!(
        stdout(&o),
        "new         2 hours ago   ---      Running\n\
         timed-out   2 hours ago   1h0m0s   Failed(PipelineRunTimeout)\n"
    );
    let ds = d.to_string_lossy().into_owned();
    let o = tkt(&["pr", "--state-dir", &ds, "list", "--last", "--no-headers"]);
    assert_eq!(stdout(&o), "new   2 hours ago   ---   Running\n");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn list_of_an_empty_store_says_so() {
    let d = state_dir("empty");
    for (kind, msg) in [
        ("pipelinerun", "No PipelineRuns found\n"),
        ("taskrun", "No TaskRuns found\n"),
        ("tr", "No TaskRuns found\n"),
    ] {
        let o = run(&d, &[kind, "list"]);
        assert_eq!(o.status.code(), Some(0));
        assert_eq!(stdout(&o), msg);
    }
    // describe/logs of "the most recent" run fail.
    let o = run(&d, &["tr", "describe"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!("tkt: no TaskRuns in the run store ({})\n", d.display())
    );
    // Regression: reading a store that does not exist created it.
    assert!(!d.exists(), "a command that only reads created the store");
}

/// Regression: `--state-dir FILE` printed its error twice.
#[test]
fn regression_state_dir_that_is_a_file_repeats_its_error() {
    let d = state_dir("file");
    std::fs::write(&d, "not a directory").unwrap();
    let o = run(&d, &["pr", "list"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains(&d.display().to_string()) && e.contains("not a directory"),
        "{e}"
    );
    std::fs::remove_file(&d).unwrap();
}

#[test]
fn list_as_json_and_yaml() {
    let d = state_dir("listjson");
    let s = Store::open(Some(&d)).unwrap();
    let a = pr(
        "a",
        Some(ago(60)),
        Some(5),
        Some(cond("True", "Succeeded", "")),
    );
    let b = pr(
        "b",
        Some(ago(30)),
        Some(5),
        Some(cond("True", "Succeeded", "")),
    );
    s.save_pipeline_run(&a).unwrap();
    s.save_pipeline_run(&b).unwrap();
    let o = run(&d, &["pr", "list", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["kind"], "PipelineRunList");
    let items: Vec<PipelineRun> = serde_json::from_value(v["items"].clone()).unwrap();
    // Times are kept to the second, as Kubernetes keeps them.
    let mut stored = s.pipeline_runs().unwrap().runs;
    stored.reverse();
    assert_eq!(items, stored);
    let names: Vec<_> = items.iter().map(|p| p.metadata.name.clone()).collect();
    assert_eq!(names, [Some("b".to_string()), Some("a".to_string())]);
    let o = run(&d, &["pr", "list", "-o", "yaml", "--last"]);
    let y = stdout(&o);
    assert!(y.starts_with("apiVersion: tekton.dev/v1\n"), "{y}");
    assert!(
        y.contains("kind: PipelineRunList\n") && y.contains("name: b\n"),
        "{y}"
    );
    assert!(!y.contains("name: a\n"), "{y}");
    std::fs::remove_dir_all(&d).unwrap();
}

// ---------------------------------------------------------------- describe

/// A failed PipelineRun `build-1` with two TaskRuns (compile, test), a
/// skipped task, a param and a result.
fn build_store(test: &str) -> (PathBuf, Store) {
    let d = state_dir(test);
    let s = Store::open(Some(&d)).expect("write the test store");
    let start = ago(65);
    let mut p = pr(
        "build-1",
        Some(start.clone()),
        Some(75),
        Some(cond(
            "False",
            "Failed",
            "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 1",
        )),
    );
    p.spec.pipeline_ref = Some(PipelineRef {
        name: Some("build".into()),
        ..PipelineRef::default()
    });
    p.spec.params = vec![
        Param {
            name: "revision".into(),
            value: ParamValue::String("main".into()),
        },
        Param {
            name: "flags".into(),
            value: ParamValue::Array(vec!["-v".into(), "-x".into()]),
        },
    ];
    let st = p.status.as_mut().expect("a status");
    st.results = vec![PipelineRunResult {
        name: "digest".into(),
        value: ParamValue::String("sha256:abc".into()),
    }];
    st.skipped_tasks = vec![SkippedTask {
        name: "deploy".into(),
        reason: "PipelineRun was stopping".into(),
        ..SkippedTask::default()
    }];
    st.child_references = ["compile", "test"]
        .map(|t| ChildStatusReference {
            name: format!("build-1-{t}"),
            pipeline_task_name: t.into(),
            ..ChildStatusReference::default()
        })
        .into();
    s.save_pipeline_run(&p).expect("write the test store");
    // `test` starts after `compile` but sorts before it by name.
    child(
        &s,
        "build-1",
        "compile",
        plus(&start, 1),
        &[("fetch", "cloning\ndone\n"), ("make", "cc main.c\n")],
        cond("True", "Succeeded", ""),
    );
    child(
        &s,
        "build-1",
        "test",
        plus(&start, 20),
        &[("unit", "FAIL: t1\nexit 1")],
        cond("False", "Failed", "\"step-unit\" exited with code 1: Error"),
    );
    // A TaskRun of another PipelineRun.
    child(
        &s,
        "other",
        "x",
        ago(5),
        &[("y", "nope\n")],
        cond("True", "Succeeded", ""),
    );
    (d, s)
}

#[test]
fn describe_pipeline_run_shows_every_section() {
    let (d, _) = build_store("describe-pr");
    let o = run(&d, &["pr", "describe", "build-1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "\
Name:           build-1
Namespace:      default
Pipeline Ref:   build

Status

STARTED      DURATION   STATUS
1 hour ago   1m15s      Failed

Message

Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 1 (\"step-unit\" exited with code 1: Error)

Params

 NAME       VALUE
 revision   main
 flags      [-v -x]

Results

 NAME     VALUE
 digest   sha256:abc

Taskruns

 NAME              TASK NAME   STARTED      DURATION   STATUS
 build-1-test      test        1 hour ago   10s        Failed
 build-1-compile   compile     1 hour ago   10s        Succeeded

Skipped Tasks

 NAME     REASON
 deploy   PipelineRun was stopping
"
    );
    // Without a name: the most recent PipelineRun (the only one here).
    let again = run(&d, &["pr", "desc"]);
    assert_eq!(stdout(&again), stdout(&o));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn describe_task_run_shows_steps_and_results() {
    let d = state_dir("describe-tr");
    let s = Store::open(Some(&d)).unwrap();
    let mut tr = TaskRun::new("hello-run", TaskRunSpec::default());
    tr.spec.task_ref = Some(TaskRef {
        name: Some("hello".into()),
        ..TaskRef::default()
    });
    tr.spec.timeout = Some("90m".into());
    let start = ago(3);
    tr.status = Some(TaskRunStatus {
        conditions: vec![cond(
            "True",
            "Succeeded",
            "All Steps have completed executing",
        )],
        completion_time: Some(plus(&start, 12)),
        start_time: Some(start),
        steps: vec![step("greet", "Completed", 0), step("lint", "Error", 1)],
        results: vec![RunResult {
            name: "greeting".into(),
            type_: Some("string".into()),
            value: ParamValue::String("hello\n".into()),
        }],
        ..TaskRunStatus::default()
    });
    s.save_task_run(&tr).unwrap();
    let o = run(&d, &["taskrun", "describe", "--last"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "\
Name:        hello-run
Namespace:   default
Task Ref:    hello
Timeout:     1h30m0s

Status

STARTED         DURATION   STATUS
3 minutes ago   12s        Succeeded

Results

 NAME       VALUE
 greeting   hello

Steps

 NAME    STATUS
 greet   Completed
 lint    Error
"
    );

    // -o json prints the stored object; it reads back unchanged.
    let o = run(&d, &["tr", "describe", "hello-run", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let back: TaskRun = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(back, s.task_run("hello-run").unwrap().unwrap());
    assert_eq!(back.status.unwrap().steps, tr.status.unwrap().steps);
    let o = run(&d, &["tr", "describe", "hello-run", "-o", "yaml"]);
    let y = stdout(&o);
    assert!(y.starts_with("apiVersion: tekton.dev/v1\n"), "{y}");
    assert!(y.contains("kind: TaskRun\n"), "{y}");
    std::fs::remove_dir_all(&d).unwrap();
}

// ---------------------------------------------------------------- logs

#[test]
fn pipeline_run_logs_are_prefixed_in_start_order() {
    let (d, _) = build_store("logs-pr");
    let o = run(&d, &["pr", "logs", "build-1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "\
[compile : fetch] cloning
[compile : fetch] done

[compile : make] cc main.c

[test : unit] FAIL: t1
[test : unit] exit 1

"
    );
    let o = run(&d, &["pr", "logs", "--last", "-t", "test"]);
    assert_eq!(
        stdout(&o),
        "[test : unit] FAIL: t1\n[test : unit] exit 1\n\n"
    );
    let o = run(
        &d,
        &["pr", "logs", "build-1", "-t", "compile", "-s", "make"],
    );
    assert_eq!(stdout(&o), "[compile : make] cc main.c\n\n");
    let o = run(&d, &["pr", "logs", "build-1", "-t", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "tkt: pipelinerun \"build-1\" has no TaskRun for task \"nope\"\n"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn task_run_logs_are_prefixed_by_step() {
    let (d, _) = build_store("logs-tr");
    let o = run(&d, &["tr", "logs", "build-1-compile"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "[fetch] cloning\n[fetch] done\n\n[make] cc main.c\n\n"
    );
    let o = run(&d, &["tr", "logs", "build-1-compile", "-s", "step-fetch"]);
    assert_eq!(stdout(&o), "[fetch] cloning\n[fetch] done\n\n");
    let o = run(
        &d,
        &[
            "tr",
            "logs",
            "build-1-compile",
            "--prefix=false",
            "-s",
            "make",
        ],
    );
    assert_eq!(stdout(&o), "cc main.c\n\n");
    // Without a name: the most recent TaskRun.
    let o = run(&d, &["tr", "logs"]);
    assert_eq!(stdout(&o), "[y] nope\n\n");
    std::fs::remove_dir_all(&d).unwrap();
}

// ---------------------------------------------------------------- errors

#[test]
fn a_missing_run_is_an_error_naming_the_store() {
    let d = state_dir("missing");
    for (args, kind) in [
        (&["pr", "describe", "nope"][..], "pipelinerun"),
        (&["pr", "logs", "nope"][..], "pipelinerun"),
        (&["tr", "describe", "nope"][..], "taskrun"),
        (&["tr", "logs", "nope"][..], "taskrun"),
        (&["tr", "delete", "nope"][..], "taskrun"),
    ] {
        let o = run(&d, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert_eq!(
            stderr(&o),
            format!(
                "tkt: {kind} \"nope\" not found in the run store ({})\n",
                d.display()
            ),
            "{args:?}"
        );
        assert!(o.stdout.is_empty());
    }
    let o = run(&d, &["pr", "describe", "../taskruns/x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not a valid pipelinerun name"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// Regression: one corrupt or empty record broke every store command
/// (`list`, `describe` and `logs` of healthy runs, even `delete`), exit 2.
/// Now it is skipped with a warning naming the file, named reads of it
/// still fail naming it, and `delete` removes it.
#[test]
fn regression_one_corrupt_record_breaks_every_store_command() {
    let d = state_dir("corrupt");
    let s = Store::open(Some(&d)).unwrap();
    s.save_pipeline_run(&pr("good", Some(ago(1)), None, None))
        .unwrap();
    let bad = d.join("pipelineruns/bad.json");
    std::fs::write(&bad, "{\"metadata\": ").unwrap();
    let empty = d.join("pipelineruns/empty.json");
    std::fs::write(&empty, "").unwrap();
    let warned = |e: &str, file: &Path| {
        e.contains(&format!(
            "tkt: warning: skipped {}: not a valid record: ",
            file.display()
        ))
    };
    for args in [&["pr", "list"][..], &["pr", "describe"], &["pr", "logs"]] {
        let o = run(&d, args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(warned(&e, &bad) && warned(&e, &empty), "{args:?}: {e}");
    }
    assert!(stdout(&run(&d, &["pr", "list"])).contains("good"));
    // Named, it is an error naming the file.
    let o = run(&d, &["pr", "describe", "bad"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with(&format!("tkt: {}: not a valid record: ", bad.display())),
        "{}",
        stderr(&o)
    );
    // The other record is still readable by name.
    let o = run(&d, &["pr", "describe", "good"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Both can be deleted; then nothing is skipped.
    let o = run(&d, &["pr", "delete", "bad", "empty"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!bad.exists() && !empty.exists());
    let o = run(&d, &["pr", "list"]);
    assert_eq!((o.status.code(), stderr(&o).as_str()), (Some(0), ""));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn usage_errors_exit_2() {
    let d = state_dir("usage");
    for args in [
        &["pr", "describe", "a", "--last"][..],
        &["pr", "list", "-o", "xml"],
        &["pr", "delete"],
        &["pr", "delete", "a", "--all"],
    ] {
        let o = run(&d, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
    let o = run(&d, &["tr", "logs", "-t", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("-s/--step"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

// ---------------------------------------------------------------- delete

#[test]
fn delete_removes_records_and_logs() {
    let (d, s) = build_store("delete");
    s.save_pipeline_run(&pr(
        "running",
        Some(ago(1)),
        None,
        Some(cond("Unknown", "Running", "")),
    ))
    .unwrap();

    let o = run(&d, &["pr", "delete", "build-1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "PipelineRuns deleted: \"build-1\"\n");
    assert!(s.pipeline_run("build-1").unwrap().is_none());
    assert!(s.task_runs_of("build-1").unwrap().runs.is_empty());
    assert!(!s.log_path("build-1-compile", "step-make").exists());
    assert!(!d.join("logs/build-1-test").exists());
    // The other PipelineRun's TaskRun is left alone.
    assert!(s.task_run("other-x").unwrap().is_some());

    // A run that has not finished needs --force.
    let o = run(&d, &["pr", "rm", "--all"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("\"running\" has not finished"),
        "{}",
        stderr(&o)
    );
    assert!(s.pipeline_run("running").unwrap().is_some());
    let o = run(&d, &["pr", "rm", "--all", "-f"]);
    assert_eq!(stdout(&o), "PipelineRuns deleted: \"running\"\n");
    assert_eq!(stdout(&run(&d, &["pr", "list"])), "No PipelineRuns found\n");

    let o = run(&d, &["tr", "delete", "other-x"]);
    assert_eq!(stdout(&o), "TaskRuns deleted: \"other-x\"\n");
    assert!(!d.join("logs/other-x").exists());
    assert_eq!(
        stdout(&run(&d, &["tr", "rm", "--all"])),
        "No TaskRuns found\n"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// A deployment to `env` (label `tektite.dev/environment`) that started
/// at `start` and took ten minutes, with a `commit-time` result when
/// given.
fn deployment(
    name: &str,
    env: &str,
    start: Time,
    c: Condition,
    commit: Option<i64>,
) -> PipelineRun {
    let mut p = pr(name, Some(start), Some(600), Some(c));
    p.metadata.labels = Some([("tektite.dev/environment".to_string(), env.to_string())].into());
    if let (Some(t), Some(s)) = (commit, p.status.as_mut()) {
        s.results.push(tektite_api::v1::PipelineRunResult {
            name: "commit-time".into(),
            value: tektite_api::param::ParamValue::String(t.to_string()),
        });
    }
    p
}

/// `tkt dora` over a constructed history: known answers for each
/// indicator, the window, one environment, cancelled and unlabelled runs
/// left out, a commit time from a TaskRun's `committer-date`, and an
/// environment still failing.
#[test]
fn dora_reports_each_indicator_of_the_deployments_in_the_store() {
    let d = state_dir("dora");
    let s = Store::open(Some(&d)).unwrap();
    let ok = || cond("True", "Succeeded", "");
    let failed = || cond("False", "Failed", "Tasks Completed: 1 (Failed: 1)");
    const DAY: i64 = 24 * 60;
    // One instant for every time of the history (whole seconds apart).
    let now = ago(0);
    let at = |minutes: i64| plus(&now, -60 * minutes);
    let done = |minutes: i64| at(minutes).0.as_second() + 600;
    // prod: a success 3 days ago, committed an hour before it ended; a
    // failure 2 days ago, restored two hours later (no commit time); a
    // success a day ago whose commit time is its clone's committer-date,
    // three hours before it ended.
    let saves = [
        deployment("d1", "prod", at(3 * DAY), ok(), Some(done(3 * DAY) - 3600)),
        deployment("d2", "prod", at(2 * DAY), failed(), None),
        deployment("d3", "prod", at(2 * DAY - 120), ok(), None),
        deployment("d4", "prod", at(DAY), ok(), None),
        deployment(
            "d5",
            "prod",
            at(DAY - 10),
            cond("False", "Cancelled", ""),
            None,
        ),
        deployment("d6", "prod", at(40 * DAY), ok(), None),
        deployment("s1", "staging", at(60), failed(), None),
        pr("plain", Some(ago(30)), Some(60), Some(ok())),
    ];
    for p in &saves {
        s.save_pipeline_run(p).unwrap();
    }
    let clone = child(&s, "d4", "clone", at(DAY), &[], ok());
    let mut clone = clone;
    clone
        .status
        .as_mut()
        .unwrap()
        .results
        .push(tektite_api::v1::RunResult {
            name: "committer-date".into(),
            type_: None,
            value: tektite_api::param::ParamValue::String((done(DAY) - 3 * 3600).to_string()),
        });
    s.save_task_run(&clone).unwrap();

    let o = run(&d, &["dora", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let envs = v["environments"].as_array().unwrap();
    assert_eq!(envs.len(), 2, "{v}");
    let prod = &envs[0];
    assert_eq!(prod["environment"], "prod");
    assert_eq!(
        (prod["deployments"].as_u64(), prod["failed"].as_u64()),
        (Some(4), Some(1))
    );
    assert!(
        (prod["deploymentsPerDay"].as_f64().unwrap() - 0.1).abs() < 1e-9,
        "{prod}"
    );
    assert_eq!(prod["changeFailureRate"], 0.25);
    assert_eq!(prod["leadTime"]["changes"], 2);
    assert_eq!(prod["leadTime"]["medianSeconds"], 2.0 * 3600.0);
    assert_eq!(prod["leadTime"]["p90Seconds"], 3.0 * 3600.0);
    assert_eq!(prod["restore"]["restored"], 1);
    assert_eq!(prod["restore"]["meanSeconds"], 2.0 * 3600.0);
    assert!(prod["restore"].get("failingSince").is_none(), "{prod}");
    let staging = &envs[1];
    assert_eq!(staging["changeFailureRate"], 1.0);
    assert_eq!(staging["restore"]["restored"], 0);
    assert!(staging["restore"]["failingSince"].is_i64(), "{staging}");

    // The text report: a line per environment, and who is still failing.
    let o = run(&d, &["dora"]);
    let text = stdout(&o);
    assert!(text.contains("ENVIRONMENT"), "{text}");
    let line = text.lines().find(|l| l.starts_with("prod")).unwrap();
    for cell in ["4", "1", "0.10", "2h / 3h", "25.0 %", "2h (1 restored)"] {
        assert!(line.contains(cell), "{cell} in {line:?}");
    }
    assert!(text.contains("staging: failing since "), "{text}");

    // A shorter window, one environment, one with no deployments.
    let o = run(&d, &["dora", "--since", "2d1h", "-e", "prod", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["environments"][0]["deployments"], 3, "{v}");
    assert_eq!(v["environments"].as_array().unwrap().len(), 1);
    let o = run(&d, &["dora", "-e", "qa", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["environments"][0]["deployments"], 0, "{v}");
    assert!(v["environments"][0]["changeFailureRate"].is_null(), "{v}");

    // Bad input: a clear error, exit 2.
    let o = run(&d, &["dora", "--since", "1x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("\"1x\" is not an age"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// Without deployments, `tkt dora` says what a deployment is.
#[test]
fn dora_counts_a_real_run_its_pipeline_labels_from_its_environment_param() {
    let d = state_dir("dora-real");
    let state = d.to_string_lossy().into_owned();
    let ran = util::tkt_run("process")
        .args(["-f", "runs/dora-deploy.yaml", "--state-dir", &state])
        .output()
        .unwrap();
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    let o = run(&d, &["dora", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let env = &v["environments"][0];
    // The param's value (dev), not the Pipeline's default (qa).
    assert_eq!(env["environment"], "dev", "{v}");
    assert_eq!(env["deployments"], 1, "{v}");
    let lead = env["leadTime"]["medianSeconds"].as_f64().unwrap();
    assert!((5400.0..5400.0 + 120.0).contains(&lead), "{v}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn dora_without_deployments_says_what_counts() {
    let d = state_dir("dora-none");
    let s = Store::open(Some(&d)).unwrap();
    s.save_pipeline_run(&pr(
        "plain",
        Some(ago(30)),
        Some(60),
        Some(cond("True", "Succeeded", "")),
    ))
    .unwrap();
    let o = run(&d, &["dora"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("No deployments found"),
        "{}",
        stdout(&o)
    );
    let _ = std::fs::remove_dir_all(&d);
}
