//! `tkt run` for real, the same suite on both runtimes (podman; host
//! processes, with a mount namespace as root and with paths rewritten as
//! without root): the runs under `tests/runs/`, checked by exit code, the final
//! object from `-o json` (conditions, results, skipped tasks) and the logs
//! kept in the run store.
//!
//! The podman suite needs podman and the local images (`hack/setup-podman.sh`,
//! `hack/images.sh`) and fails without them unless `TEKTITE_SKIP_PODMAN=1`;
//! the process suite needs root (mount namespaces).

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{entrypoint_env, static_entrypoint, tests_dir, tkt_path, tkt_run};

/// Whether the suite for `rt` runs here (it fails when it should and cannot).
fn ready(rt: &str) -> bool {
    if rt == "process" || rt == "rewrite" {
        entrypoint_env();
        return true;
    }
    util::podman_ready()
}

/// A run store of its own, removed on drop.
struct State(PathBuf);

impl State {
    fn new(name: &str) -> State {
        let p = std::env::temp_dir().join(format!("tkt-run-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        State(p)
    }
    fn arg(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // What a run kept (`--keep`) on the tmpfs, too.
        if let Some(fast) = util::fast_store_dir(&self.0) {
            let _ = std::fs::remove_dir_all(fast);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tkt(args: &[&str]) -> Output {
    Command::new(tkt_path())
        .args(args)
        .current_dir(tests_dir())
        .env("NO_COLOR", "1")
        .env("TEKTITE_ENTRYPOINT", entrypoint_env())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `tkt run -o json` of a file under `tests/runs/`: exit code and object.
fn run(rt: &str, state: &State, file: &str, extra: &[&str]) -> (i32, Value, String) {
    let path = if file.starts_with('/') {
        file.to_string()
    } else {
        format!("runs/{file}")
    };
    let sd = state.arg();
    let mut args = vec!["-f", &path, "--state-dir", &sd, "-o", "json"];
    args.extend_from_slice(extra);
    let out = tkt_run(rt).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not the run as JSON ({e}); stderr:\n{stderr}"));
    (out.status.code().unwrap_or(-1), v, stderr)
}

fn condition(v: &Value) -> (String, String, String) {
    let c = v["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Succeeded")
        .unwrap();
    (
        c["status"].as_str().unwrap().into(),
        c["reason"].as_str().unwrap().into(),
        c["message"].as_str().unwrap_or("").into(),
    )
}

fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap().to_string()
}

/// Logs from the store (`tkt pr|tr logs NAME`).
fn logs(state: &State, kind: &str, name: &str) -> String {
    let out = tkt(&[kind, "logs", name, "--state-dir", &state.arg()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn result<'a>(v: &'a Value, name: &str) -> &'a Value {
    &v["status"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no result {name} in {}", v["status"]))["value"]
}

fn steps_scripts_params_and_results_of_a_taskrun(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-steps"));
    let (code, v, stderr) = run(rt, &s, "taskrun-steps.yaml", &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(condition(&v).1, "Succeeded");
    assert_eq!(result(&v, "greeting"), "hello");
    assert_eq!(
        result(&v, "list"),
        &serde_json::json!(["alpha", "beta gamma"])
    );
    assert_eq!(result(&v, "meta"), &serde_json::json!({"branch": "main"}));
    let log = logs(&s, "tr", &name(&v));
    let first = log
        .find("[first] first: hello")
        .unwrap_or_else(|| panic!("{log}"));
    let args = log.find("[args] args: 2 [alpha] [beta gamma]").unwrap();
    let object = log
        .find("[object] repo https://git.local/app at main")
        .unwrap();
    assert!(first < args && args < object, "steps in order: {log}");
}

/// With a static entrypoint binary, tkt does the `prepare` init container's
/// work on the host for podman: the played pod has no `prepare`, mounts the
/// binary at `/tekton/bin/entrypoint`, and its steps run as before
/// (scripts, params, results, order).
#[test]
fn podman_with_a_static_entrypoint_needs_no_prepare_container() {
    if !ready("podman") {
        return;
    }
    let s = State::new("podman-static-entrypoint");
    let sd = s.arg();
    let out = tkt_run("podman")
        .args(["-f", "runs/taskrun-steps.yaml", "--state-dir", &sd])
        .args(["-o", "json", "--keep"])
        .env("TEKTITE_ENTRYPOINT", static_entrypoint())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let pod_name = v["status"]["podName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let _ = Command::new("podman")
        .args(["pod", "rm", "--force", "--time", "0", &pod_name])
        .output();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(condition(&v).1, "Succeeded");
    assert_eq!(result(&v, "greeting"), "hello");
    assert_eq!(result(&v, "meta"), &serde_json::json!({"branch": "main"}));
    let played = walk(&s.0.join("work"))
        .into_iter()
        .find(|p| p.ends_with("pod.json"))
        .unwrap_or_else(|| panic!("no pod.json kept under {}", s.0.display()));
    let pod: Value = serde_json::from_slice(&std::fs::read(&played).unwrap()).unwrap();
    let init: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(!init.contains(&"prepare"), "init containers: {init:?}");
    let step = &pod["spec"]["containers"][0];
    assert!(
        step["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/tekton/bin/entrypoint" && m["readOnly"] == true),
        "{step}"
    );
}

/// A pod's bookkeeping (the steps' run directories, step links and, on
/// podman, termination files) is kept in the `TEKTITE_RUN_TMPFS` directory
/// while its workspaces stay in the store's work directory; the steps see
/// the same paths and rights. `--keep` keeps it until the run is deleted
/// (by a `tkt` with another environment too); otherwise it goes with the
/// run.
fn a_pods_bookkeeping_is_kept_on_the_tmpfs_and_removed_with_the_run(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-tmpfs"));
    std::fs::create_dir_all(&s.0).unwrap();
    let fast_dir = FastDir::new(&s);
    let fast = fast_dir.0.clone();
    let yaml = r#"apiVersion: tekton.dev/v1
kind: TaskRun
metadata: {name: fast}
spec:
  workspaces: [{name: w, emptyDir: {}}]
  taskSpec:
    workspaces: [{name: w}]
    steps:
      - {name: a, image: localhost/tektite/busybox:latest, script: "echo a-ran > $(workspaces.w.path)/a"}
      - name: b
        image: localhost/tektite/busybox:latest
        script: |
          echo "own $(stat -f -c %T /tekton/run/1) workspace $(stat -f -c %T /workspace/w)"
          echo "a exited $(cat /tekton/steps/step-a/exitCode) and left $(cat /workspace/w/a)"
          touch /tekton/run/0/x 2>/dev/null && echo "wrote into step a's directory"
          true
"#;
    let file = s.0.join("fast.yaml");
    std::fs::write(&file, yaml).unwrap();
    let run_once = |keep: bool| {
        let mut cmd = tkt_run(rt);
        cmd.args(["-f", &file.to_string_lossy(), "--state-dir", &s.arg()])
            .env(tektite_local::tmpfs::ENV, &fast);
        if keep {
            cmd.arg("--keep");
        }
        cmd.output().unwrap()
    };
    let out = run_once(true);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let remove_kept_pod = || {
        if rt == "podman" {
            let _ = Command::new("podman")
                .args(["pod", "rm", "--force", "--time", "0", "fast-pod"])
                .output();
        }
    };
    remove_kept_pod();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("a exited 0 and left a-ran"), "{text}");
    assert!(!text.contains("wrote into step a's directory"), "{text}");
    if tektite_local::tmpfs::is_tmpfs(&fast) {
        assert!(text.contains("own tmpfs workspace "), "{text}");
    }
    if !tektite_local::tmpfs::is_tmpfs(&s.0) {
        assert!(!text.contains("workspace tmpfs"), "{text}");
    }
    let kept = walk(&fast);
    let has = |end: &str| kept.iter().any(|p| p.ends_with(end));
    assert!(has("tekton-internal-runs/1/status/exitCode"), "{kept:?}");
    assert!(has("tekton-internal-steps/step-b"), "{kept:?}");
    if rt == "podman" {
        assert!(has("termination-1"), "{kept:?}");
    }
    let on_disk = walk(&s.0.join("work"));
    assert!(
        on_disk
            .iter()
            .all(|p| !p.to_string_lossy().contains("tekton-internal-run")),
        "{on_disk:?}"
    );
    // The workspace's file, in its volume's directory.
    assert!(
        on_disk
            .iter()
            .any(|p| p.ends_with("a") && std::fs::read(p).unwrap() == b"a-ran\n"),
        "{on_disk:?}"
    );
    // Deleting the kept run removes both: where the run's directory went
    // is read from the run's record of it, not from this command's
    // environment (which names another place here).
    let del = Command::new(tkt_path())
        .args(["tr", "delete", "fast", "--state-dir", &s.arg()])
        .env(tektite_local::tmpfs::ENV, "off")
        .output()
        .unwrap();
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    assert_eq!(walk_dirs(&fast), Vec::<PathBuf>::new());
    assert_eq!(walk_dirs(&s.0.join("work")), Vec::<PathBuf>::new());
    // Without --keep, nothing is left once the run is over.
    let out = run_once(false);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(walk_dirs(&fast), Vec::<PathBuf>::new());
    assert_eq!(walk_dirs(&s.0.join("work")), Vec::<PathBuf>::new());
}

/// A retried TaskRun's earlier attempt leaves no bookkeeping in memory
/// while the next one runs: the second attempt waits until the test has
/// looked.
fn a_retry_frees_the_earlier_attempts_bookkeeping(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-tmpfs-retry"));
    std::fs::create_dir_all(&s.0).unwrap();
    let fast = FastDir::new(&s);
    let yaml = r#"apiVersion: tekton.dev/v1
kind: TaskRun
metadata: {name: again}
spec:
  retries: 1
  workspaces: [{name: w, persistentVolumeClaim: {claimName: flags}}]
  taskSpec:
    workspaces: [{name: w}]
    steps:
      - name: s
        image: localhost/tektite/busybox:latest
        script: |
          if [ ! -f $(workspaces.w.path)/tried ]; then touch $(workspaces.w.path)/tried; exit 1; fi
          while [ ! -f $(workspaces.w.path)/go ]; do sleep 0.1; done
          echo second attempt
"#;
    let file = s.0.join("again.yaml");
    std::fs::write(&file, yaml).unwrap();
    let child = tkt_run(rt)
        .args(["-f", &file.to_string_lossy(), "--state-dir", &s.arg()])
        .env(tektite_local::tmpfs::ENV, &fast.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pods = |dir: &Path| -> Vec<String> {
        walk_dirs(dir)
            .into_iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .filter(|n| n.starts_with("again-pod"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pods(&fast.0).contains(&"again-pod-retry1".to_string()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = pods(&fast.0);
    // Release the second attempt, wherever its claim is.
    let tried = walk(&s.0.join("work"))
        .into_iter()
        .find(|p| p.ends_with("tried"));
    if let Some(t) = &tried {
        std::fs::write(t.with_file_name("go"), b"").unwrap();
    }
    let out = util::wait_guarded(child, "tkt run of a retried TaskRun");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if rt == "podman" {
        let _ = Command::new("podman")
            .args(["pod", "rm", "--force", "--time", "0", "again-pod-retry1"])
            .output();
    }
    assert!(tried.is_some(), "the first attempt ran: {text}");
    assert_eq!(during, ["again-pod-retry1"], "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("second attempt"), "{text}");
    assert_eq!(walk_dirs(&fast.0), Vec::<PathBuf>::new());
}

#[test]
fn a_retry_frees_the_earlier_attempts_bookkeeping_process() {
    a_retry_frees_the_earlier_attempts_bookkeeping("process");
}

#[test]
fn a_retry_frees_the_earlier_attempts_bookkeeping_podman() {
    a_retry_frees_the_earlier_attempts_bookkeeping("podman");
}

/// The directory a test gives `tkt` as `TEKTITE_RUN_TMPFS`: on the
/// machine's tmpfs when it has one (so steps can tell), removed on drop.
struct FastDir(PathBuf);

impl FastDir {
    fn new(s: &State) -> FastDir {
        let shm = Path::new("/dev/shm");
        // Named after the test's store: one each.
        let name = format!("{}-fast", s.0.file_name().unwrap().to_string_lossy());
        let dir = if tektite_local::tmpfs::is_tmpfs(shm) {
            shm.join(name)
        } else {
            s.0.join(name)
        };
        let _ = std::fs::remove_dir_all(&dir);
        FastDir(dir)
    }
}

impl Drop for FastDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every directory under `dir`, and every file.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_dirs(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn a_pods_bookkeeping_is_kept_on_the_tmpfs_and_removed_with_the_run_process() {
    a_pods_bookkeeping_is_kept_on_the_tmpfs_and_removed_with_the_run("process");
}

#[test]
fn a_pods_bookkeeping_is_kept_on_the_tmpfs_and_removed_with_the_run_podman() {
    a_pods_bookkeeping_is_kept_on_the_tmpfs_and_removed_with_the_run("podman");
}

/// Every file under `dir` (links included, not followed).
fn walk(dir: &Path) -> Vec<PathBuf> {
    walk_dirs(dir)
        .into_iter()
        .filter(|p| !std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
        .collect()
}

fn results_when_scoping_shared_workspace_and_finally(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-flow"));
    let (code, v, stderr) = run(rt, &s, "pipeline-flow.yaml", &[]);
    assert_eq!(code, 0, "{stderr}");
    let (status, reason, message) = condition(&v);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Completed"));
    assert_eq!(
        message,
        "Tasks Completed: 3 (Failed: 0, Cancelled 0), Skipped: 1"
    );
    assert_eq!(result(&v, "digest"), "sha256:abc");
    assert!(
        v["status"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["name"] != "from-skipped"),
        "a result of a skipped task is left out"
    );
    let skipped = &v["status"]["skippedTasks"][0];
    assert_eq!(skipped["name"], "deploy-prod");
    assert_eq!(skipped["reason"], "When Expressions evaluated to false");
    let log = logs(&s, "pr", &name(&v));
    assert!(
        log.contains("[verify : check] verify sha256:abc built"),
        "{log}"
    );
    assert!(
        log.contains("[report : print] report Completed prod=None"),
        "{log}"
    );
}

/// Tekton's implicit propagation, onError from a param and an unnamed
/// sidecar, each refused before (`propagated_params_and_workspaces_run`).
fn propagated_params_and_workspaces_run(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-propagation"));
    let (code, v, stderr) = run(rt, &s, "pipeline-propagation.yaml", &[]);
    assert_eq!(code, 0, "{stderr}");
    let (status, reason, message) = condition(&v);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Succeeded"));
    assert_eq!(
        message,
        "Tasks Completed: 3 (Failed: 1 (Ignored: 1), Cancelled 0), Skipped: 0"
    );
    let log = logs(&s, "pr", &name(&v));
    for line in [
        "[plain : s] plain says from the run",
        "[own : s] own says from the task",
        "[reader : s] reader found from the run",
    ] {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }
}

/// Step-level `when`: guarded-out steps are skipped (reported `Skipped`,
/// exit code 0) and the next steps run; an earlier step's result decides.
fn steps_guarded_by_when_expressions(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-step-when"));
    let (code, v, stderr) = run(rt, &s, "taskrun-step-when.yaml", &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(condition(&v).1, "Succeeded");
    let steps = v["status"]["steps"].as_array().unwrap();
    let reason = |name: &str| {
        let st = steps.iter().find(|x| x["name"] == name).unwrap();
        (
            st["terminationReason"].as_str().unwrap_or("").to_string(),
            st["terminated"]["exitCode"].as_i64(),
        )
    };
    assert_eq!(reason("decide"), ("Completed".into(), Some(0)));
    assert_eq!(reason("deploy"), ("Skipped".into(), Some(0)));
    assert_eq!(reason("with-cache"), ("Skipped".into(), Some(0)));
    assert_eq!(reason("follow"), ("Completed".into(), Some(0)));
    assert_eq!(reason("last"), ("Completed".into(), Some(0)));
    let log = logs(&s, "tr", &name(&v));
    assert!(log.contains("[follow] following the verdict"), "{log}");
    assert!(log.contains("[last] last step"), "{log}");
    assert!(
        !log.contains("deploying") && !log.contains("using the cache"),
        "{log}"
    );
}

/// `$(steps.<s>.results.<r>)` (whole, `[*]`, `[i]`, `.key`) in a later
/// step's args and env, replaced by the entrypoint when the step starts.
fn earlier_step_results_in_args_and_env(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-step-results"));
    let (code, v, stderr) = run(rt, &s, "taskrun-step-results.yaml", &[]);
    assert_eq!(code, 0, "{stderr}");
    let log = logs(&s, "tr", &name(&v));
    assert!(
        log.contains("[use] args: 4 [one] [two words] [two words] [from git.local/app] tag=v1.2"),
        "{log}"
    );
}

fn on_error_at_both_levels_stopping_and_finally(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-failures"));
    let (code, v, stderr) = run(rt, &s, "pipeline-failures.yaml", &[]);
    assert_eq!(code, 1, "{stderr}");
    let (status, reason, message) = condition(&v);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Failed"));
    assert_eq!(
        message,
        "Tasks Completed: 4 (Failed: 2 (Ignored: 1), Cancelled 0), Skipped: 1"
    );
    assert_eq!(v["status"]["skippedTasks"][0]["name"], "never");
    assert_eq!(
        v["status"]["skippedTasks"][0]["reason"],
        "PipelineRun was stopping"
    );
    let log = logs(&s, "pr", &name(&v));
    assert!(log.contains("[lenient-step : after] after lint"), "{log}");
    assert!(log.contains("[broken : fail] breaking"), "{log}");
    assert!(log.contains("[report : print] report Failed"), "{log}");
    assert!(!log.contains("never"), "{log}");
    // The step that continued kept its real exit code.
    let tr = tkt(&[
        "tr",
        "describe",
        &format!("{}-lenient-step", name(&v)),
        "-o",
        "json",
        "--state-dir",
        &s.arg(),
    ]);
    let tr: Value = serde_json::from_slice(&tr.stdout).unwrap();
    assert_eq!(tr["status"]["steps"][0]["terminated"]["exitCode"], 3);
    assert_eq!(tr["status"]["steps"][0]["terminationReason"], "Continued");
}

fn retries_and_a_task_timeout(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-retries"));
    let (code, v, stderr) = run(rt, &s, "pipeline-retries.yaml", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(condition(&v).1, "Failed");
    let pr = name(&v);
    let describe = |tr: &str| -> Value {
        let o = tkt(&["tr", "describe", tr, "-o", "json", "--state-dir", &s.arg()]);
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let flaky = describe(&format!("{pr}-flaky"));
    assert_eq!(condition(&flaky).1, "Succeeded");
    assert_eq!(
        flaky["status"]["retriesStatus"].as_array().unwrap().len(),
        1
    );
    assert_eq!(flaky["status"]["podName"], format!("{pr}-flaky-pod-retry1"));
    let slow = describe(&format!("{pr}-slow"));
    let (_, reason, message) = condition(&slow);
    assert_eq!(reason, "TaskRunTimeout");
    assert_eq!(
        message,
        format!("TaskRun \"{pr}-slow\" failed to finish within \"2s\"")
    );
    let log = logs(&s, "pr", &pr);
    assert!(
        log.contains("first attempt fails") && log.contains("second attempt"),
        "{log}"
    );
}

fn parallel_tasks_overlap_and_a_matrix_gathers_results(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-parallel"));
    // Each of left and right waits for the other: they can only succeed
    // when they run at the same time.
    let (code, v, stderr) = run(
        rt,
        &s,
        "pipeline-parallel-matrix.yaml",
        &["--parallel", "2"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(condition(&v).1, "Succeeded");
    let refs: Vec<&str> = v["status"]["childReferences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let pr = name(&v);
    for i in 0..3 {
        assert!(
            refs.contains(&format!("{pr}-build-{i}").as_str()),
            "{refs:?}"
        );
    }
    let log = logs(&s, "pr", &pr);
    assert!(
        log.contains("[left : meet] met") && log.contains("[right : meet] met"),
        "{log}"
    );
    assert!(
        log.contains("[publish : p] publish app-linux app-mac app-windows"),
        "{log}"
    );
}

fn a_pipeline_timeout_from_the_command_line(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-timeout"));
    let (code, v, stderr) = run(rt, &s, "pipeline-long.yaml", &["--timeout", "3s"]);
    assert_eq!(code, 1, "{stderr}");
    let (status, reason, message) = condition(&v);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "PipelineRunTimeout")
    );
    assert_eq!(
        message,
        format!(
            "PipelineRun \"{}\" failed to finish within \"3s\"",
            name(&v)
        )
    );
}

fn sigint_cancels_the_run_and_exits_130(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-cancel"));
    // A sleep of its own length, to find it among other tests' processes.
    let seconds = match rt {
        "podman" => "121",
        "process" => "122",
        _ => "123",
    };
    let p = format!("seconds={seconds}");
    let mut child = tkt_run(rt)
        .args([
            "-f",
            "runs/pipeline-long.yaml",
            "--state-dir",
            &s.arg(),
            "-o",
            "json",
            "-p",
            &p,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until the step runs: its line is in the store.
    let start = Instant::now();
    let logs_dir = s.0.join("logs");
    loop {
        let seen = std::fs::read_dir(&logs_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| {
                std::fs::read_to_string(d.path().join("step-sleep.log"))
                    .is_ok_and(|t| t.contains("waiting"))
            });
        if seen {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the step never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = wait_bounded(&mut child);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (status, reason, _) = condition(&v);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Cancelled"));
    // Recorded as cancelled, and no pod of the run is left behind.
    let stored = tkt(&[
        "pr",
        "describe",
        &name(&v),
        "-o",
        "json",
        "--state-dir",
        &s.arg(),
    ]);
    let stored: Value = serde_json::from_slice(&stored.stdout).unwrap();
    assert_eq!(condition(&stored).1, "Cancelled");
    if rt == "podman" {
        let pods = Command::new("podman")
            .args(["pod", "ps", "--format", "{{.Name}}"])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&pods.stdout).contains(&name(&v)));
    } else {
        // The step's `sleep` was stopped with its process group.
        let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&ps.stdout)
                .lines()
                .any(|l| l.trim() == format!("sleep {seconds}"))
        );
    }
}

fn wait_bounded(child: &mut std::process::Child) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("tkt did not exit after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read as _;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out.stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut out.stderr)
        .unwrap();
    out
}

fn a_task_with_params_and_a_host_directory_workspace(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-task"));
    let dir = s.0.join("out");
    std::fs::create_dir_all(&dir).unwrap();
    let d = format!("out={}", dir.display());
    let (code, v, stderr) = run(rt, &s, "task-greet.yaml", &["-p", "who=Tektite", "-w", &d]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(result(&v, "line"), "hello, Tektite!");
    assert_eq!(
        std::fs::read_to_string(dir.join("greeting")).unwrap(),
        "hello, Tektite!"
    );
}

fn a_sidecar_runs_beside_the_steps(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-sidecar"));
    let (code, v, stderr) = run(rt, &s, "taskrun-sidecar.yaml", &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(condition(&v).1, "Succeeded");
    let log = logs(&s, "tr", &name(&v));
    assert!(log.contains("[use] step after the sidecar"), "{log}");
}

/// A copy of `tests/runs/<file>` in the state directory with the ports
/// 18080 and 18081 replaced by free ones of this machine (host processes
/// share its network): its absolute path.
fn with_free_ports(state: &State, file: &str) -> String {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string()
    };
    let text = std::fs::read_to_string(tests_dir().join("runs").join(file)).unwrap();
    let text = text.replace("18080", &free()).replace("18081", &free());
    std::fs::create_dir_all(&state.0).unwrap();
    let path = state.0.join(file);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn sidecar_probes_hold_the_first_step_until_ready(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-sidecar-probes"));
    let file = with_free_ports(&s, "taskrun-sidecar-probes.yaml");
    let (code, v, stderr) = run(rt, &s, &file, &[]);
    let log = logs(&s, "tr", &name(&v));
    assert_eq!(code, 0, "{stderr}\n{log}");
    assert_eq!(condition(&v).1, "Succeeded");
    // Each server was up, and the file written, when the step ran.
    for line in ["[use] web-ok", "[use] tcp-ok", "[use] file-ok"] {
        assert!(log.contains(line), "{line} in {log}");
    }
}

fn a_sidecar_never_ready_times_the_run_out_naming_it(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-sidecar-never-ready"));
    let (code, v, stderr) = run(rt, &s, "taskrun-sidecar-never-ready.yaml", &[]);
    assert_eq!(code, 1, "{stderr}");
    let (status, reason, message) = condition(&v);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TaskRunTimeout")
    );
    let tr = name(&v);
    assert_eq!(
        message,
        format!(
            "TaskRun \"{tr}\" failed to finish within \"8s\": the steps never started, \
             waiting for the sidecar \"stuck\" (readiness probe failed: the command exited \
             with code 1) to be ready"
        )
    );
    let log = logs(&s, "tr", &tr);
    assert!(!log.contains("the step ran"), "{log}");
}

fn a_sidecar_failing_before_ready_fails_the_run(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-sidecar-exits"));
    let (code, v, stderr) = run(rt, &s, "taskrun-sidecar-exits.yaml", &[]);
    assert_eq!(code, 1, "{stderr}");
    let (_, reason, message) = condition(&v);
    assert_eq!(reason, "SidecarFailed");
    assert_eq!(message, "\"sidecar-crash\" exited with code 3: Error");
    // An ended sidecar no longer holds the steps back.
    let log = logs(&s, "tr", &name(&v));
    assert!(log.contains("[after] the step ran"), "{log}");
}

fn a_sidecar_failing_its_startup_probe_is_killed(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-sidecar-startup"));
    let (code, v, stderr) = run(rt, &s, "taskrun-sidecar-startup-fails.yaml", &[]);
    assert_eq!(code, 1, "{stderr}");
    let (_, reason, message) = condition(&v);
    assert_eq!(reason, "SidecarFailed");
    assert!(
        message.starts_with("\"sidecar-slow\" exited with code 137"),
        "{message}"
    );
    let log = logs(&s, "tr", &name(&v));
    assert!(log.contains("[after] the step ran"), "{log}");
}

#[test]
fn podman_runs_the_image_command_of_a_step_without_one() {
    if !ready("podman") {
        return;
    }
    let s = State::new("podman-image-command");
    let (code, v, stderr) = run("podman", &s, "taskrun-image-command.yaml", &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(condition(&v).1, "Succeeded");
    // The process runtime cannot read an image's command: it says so.
    let s = State::new("process-image-command");
    let (code, v, _) = run("process", &s, "taskrun-image-command.yaml", &[]);
    assert_eq!(code, 1);
    let (_, reason, message) = condition(&v);
    assert_eq!(reason, "TaskRunValidationFailed");
    assert!(message.contains("has no command"), "{message}");
}

/// One test per scenario and runtime.
fn step_actions_with_params_a_template_and_an_unwritten_result(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-stepactions"));
    let (code, v, stderr) = run(rt, &s, "taskrun-stepactions.yaml", &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(condition(&v).1, "Succeeded");
    let log = logs(&s, "tr", &name(&v));
    // The step's value (from the TaskRun), the StepAction's default, the
    // object's given key over its default's other key, the stepTemplate.
    assert!(
        log.contains("[greet] hello Ada from Paris, France (template)"),
        "{log}"
    );
    // A result the StepAction never wrote: the run succeeds without it.
    assert!(
        v["status"]["results"]
            .as_array()
            .is_none_or(|r| r.iter().all(|x| x["name"] != "note")),
        "{}",
        v["status"]
    );
    // The status keeps the spec as run: the StepActions inlined.
    let step = &v["status"]["taskSpec"]["steps"][0];
    assert_eq!(step["image"], "localhost/tektite/busybox:latest");
    assert!(step.get("ref").is_none(), "{step}");
}

fn an_unwritten_step_action_result_fails_the_pipeline_that_reads_it(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-stepaction-unwritten"));
    let (code, v, stderr) = run(rt, &s, "pipeline-stepaction-result-missing.yaml", &[]);
    assert_eq!(code, 1, "{stderr}");
    let (status, _, message) = condition(&v);
    assert_eq!(status, "False");
    assert!(
        message.contains(
            "task \"produce\" completed successfully but did not emit the result \"note\""
        ),
        "{message}"
    );
}

/// Regression: on podman, each container's log was followed on its own, so
/// the lines of steps that ran within a few milliseconds of each other
/// reached the user in any order.
fn regression_quick_steps_were_printed_out_of_order(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-quick-steps"));
    let (code, v, stderr) = run(rt, &s, "taskrun-quick-steps.yaml", &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(condition(&v).1, "Succeeded");
    let printed: Vec<&str> = stderr.lines().filter(|l| l.contains("] line ")).collect();
    let want: Vec<String> = (1..=8).map(|i| format!("[s{i}] line {i} of 8")).collect();
    assert_eq!(printed, want, "{stderr}");
}

/// Regression: on podman, a step that had ended before its log file was
/// looked up (a quick step ends before `podman inspect` of 20 containers
/// returns) had no conmon to watch, so its follower asked podman whether
/// it still ran, half a second apart and one step after another: a 20-step
/// no-op TaskRun took 5.7 times as long as the same containers in a plain
/// pod. Every `podman` that tkt runs is counted here through a wrapper on
/// PATH (the real podman does the work): the steps' output is whole, and
/// no step's state is asked for one by one.
#[test]
fn regression_podman_asked_each_ended_step_whether_it_still_ran() {
    if !ready("podman") {
        return;
    }
    let s = State::new("podman-ended-steps");
    let (path, calls) = podman_recorder(&s);
    run_quick_steps(&s, &path);
    let calls = std::fs::read_to_string(&calls).unwrap();
    let asked: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("inspect --format {{.State.Status}}"))
        .collect();
    // One may be asked when its conmon ended between the lookup and the
    // check of its process: not one per step.
    assert!(asked.len() <= 1, "states asked one by one: {asked:?}");
}

/// Where each container's output is comes from the IDs `podman kube play`
/// prints and one inspection of the pod's infra container: podman is not
/// asked about every container while they start and end (which waited on
/// their cleanups' locks), and no step's output is lost for it.
#[test]
fn podman_finds_the_log_files_without_inspecting_every_container() {
    if !ready("podman") {
        return;
    }
    let s = State::new("podman-log-lookup");
    let (path, calls) = podman_recorder(&s);
    run_quick_steps(&s, &path);
    let calls = std::fs::read_to_string(&calls).unwrap();
    let lookups: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("inspect --format {{.Name}}"))
        .collect();
    assert_eq!(lookups.len(), 1, "{calls}");
    let names: Vec<&str> = lookups[0]
        .split_whitespace()
        .skip(2)
        .filter(|w| !w.contains("{{"))
        .collect();
    assert!(
        names.len() == 1 && names[0].ends_with("-infra"),
        "log files looked up by container: {names:?}"
    );
}

/// A `podman` on a PATH of its own that records each call's arguments in
/// a file, then runs the real one: (PATH, the file).
fn podman_recorder(s: &State) -> (String, PathBuf) {
    let bin = s.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v podman"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let calls = s.0.join("calls");
    let wrapper = bin.join("podman");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            calls.display(),
            real.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, calls)
}

/// Runs the eight quick steps on podman with `path`: the run succeeds and
/// every step's line is shown.
fn run_quick_steps(s: &State, path: &str) {
    let sd = s.arg();
    let out = tkt_run("podman")
        .args(["-f", "runs/taskrun-quick-steps.yaml", "--state-dir", &sd])
        .args(["-o", "json"])
        .env("PATH", path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for i in 1..=8 {
        assert!(
            stderr.contains(&format!("[s{i}] line {i} of 8")),
            "{stderr}"
        );
    }
}

/// A file of its own holding `text`, outside any run store; removed on drop.
struct Outside(PathBuf);

impl Outside {
    fn new(name: &str, text: &str) -> Outside {
        let d = std::env::temp_dir().join(format!("tkt-run-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("token"), text).unwrap();
        Outside(d)
    }
    fn file(&self) -> String {
        self.0.join("token").to_string_lossy().into_owned()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn configmaps_and_secrets_feed_env_volumes_and_workspaces(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-values"));
    let token = Outside::new(&format!("{rt}-values-token"), "tok-from-a-file\n");
    let flag = format!("from-flags=token={}", token.file());
    let (code, v, stderr) = run(
        rt,
        &s,
        "taskrun-configmaps-secrets.yaml",
        &["--secret", &flag],
    );
    assert_eq!(code, 0, "{stderr}\n{}", v["status"]);
    let log = logs(&s, "tr", &name(&v));
    for line in [
        "[env] user=*** level=info absent=unset",
        "[env] from envFrom: info eu-west",
        "[env] token=***",
        "[files] pw 400: ***",
        "[files] user 640: ***",
        "[files] maybe: 0 files",
        "[files] config: info",
        "[files] both: *** eu-west",
        "[one-file] one file: ***",
    ] {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }
    // Mounted read-only where there are mounts to make so (podman, and
    // the process runtime's mount namespace).
    let ro = if rt == "rewrite" {
        "writable"
    } else {
        "read-only"
    };
    assert!(log.contains(&format!("[files] config is {ro}")), "{log}");
}

/// What a run refuses about its ConfigMaps and Secrets, before anything
/// runs or is recorded: exit 2, naming the file, the field and the object.
fn missing_or_bad_values_are_refused_before_anything_runs(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-values-refused"));
    std::fs::create_dir_all(&s.0).unwrap();
    let sd = s.arg();
    let step = "      - name: s\n        image: localhost/tektite/busybox:latest\n        script: echo never\n";
    let cases = [
        (
            "missing.yaml",
            format!(
                "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {{name: m}}\nspec:\n  taskSpec:\n    steps:\n{step}        env:\n          - {{name: A, value: a}}\n          - name: B\n            valueFrom: {{secretKeyRef: {{name: s1, key: k}}}}\n"
            ),
            vec![
                "missing.yaml: TaskRun m: spec.taskSpec.steps[0].env[1].valueFrom.secretKeyRef: Secret \"s1\" is not given",
            ],
        ),
        (
            "nokey.yaml",
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata: {{a: x}}\n---\napiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {{name: k}}\nspec:\n  workspaces:\n    - name: w\n      configMap: {{name: c, items: [{{key: b, path: b}}]}}\n  taskSpec:\n    workspaces: [{{name: w}}]\n    steps:\n{step}"
            ),
            vec!["spec.workspaces[0].configMap.items[0]: ConfigMap \"c\" has no key \"b\""],
        ),
        (
            "pipeline.yaml",
            "apiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata: {name: p}\nspec:\n  params: [{name: sec, value: from-param}]\n  pipelineSpec:\n    params: [{name: sec}]\n    tasks:\n      - name: t\n        params: [{name: s, value: $(params.sec)}]\n        taskSpec:\n          params: [{name: s}]\n          steps:\n            - name: s\n              image: localhost/tektite/busybox:latest\n              script: echo never\n              envFrom: [{secretRef: {name: $(params.s)}}]\n".to_string(),
            vec!["pipeline.yaml: PipelineRun p: spec.pipelineSpec.tasks[0].taskSpec.steps[0].envFrom[0].secretRef: Secret \"from-param\" is not given"],
        ),
        (
            "base64.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  ok: aGk=\n  bad: '%%%'\n"
                .to_string(),
            vec!["base64.yaml:6: Secret/s (document 1): data.bad: not valid base64"],
        ),
        (
            "nfs.yaml",
            format!(
                "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {{name: n}}\nspec:\n  taskSpec:\n    volumes:\n      - {{name: v, nfs: {{server: h, path: /}}}}\n    steps:\n{step}"
            ),
            vec![
                "spec.taskSpec.volumes[0]: volume \"v\": nfs volumes are not supported by local runs",
            ],
        ),
    ];
    for (file, yaml, expected) in cases {
        let path = s.0.join(file);
        std::fs::write(&path, yaml).unwrap();
        let out = tkt_run(rt)
            .args(["-f", &path.to_string_lossy(), "--state-dir", &sd])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        for e in expected {
            assert!(err.contains(e), "{file}: no {e:?} in:\n{err}");
        }
        assert!(!err.contains("aGk") && !err.contains("never"), "{err}");
    }
    for kind in ["pr", "tr"] {
        let list = tkt(&[kind, "list", "--state-dir", &sd]);
        assert!(
            String::from_utf8_lossy(&list.stdout).starts_with("No "),
            "{kind}"
        );
    }
}

/// A Secret named only by a task's result cannot be checked before the
/// run: its TaskRun fails when its pod is made, with Kubernetes' reason and
/// message, instead of starting with an empty value.
fn a_secret_named_by_a_result_is_checked_when_its_pod_is_made(rt: &str) {
    if !ready(rt) {
        return;
    }
    let s = State::new(&format!("{rt}-values-late"));
    std::fs::create_dir_all(&s.0).unwrap();
    let yaml = r#"apiVersion: tekton.dev/v1
kind: PipelineRun
metadata: {generateName: late-}
spec:
  pipelineSpec:
    tasks:
      - name: a
        taskSpec:
          results: [{name: secret}]
          steps:
            - {name: s, image: localhost/tektite/busybox:latest, script: "printf from-result > $(results.secret.path)"}
      - name: b
        params: [{name: s, value: $(tasks.a.results.secret)}]
        taskSpec:
          params: [{name: s}]
          steps:
            - name: s
              image: localhost/tektite/busybox:latest
              env: [{name: T, valueFrom: {secretKeyRef: {name: $(params.s), key: k}}}]
              script: echo "should not run"
"#;
    let path = s.0.join("late.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = tkt_run(rt)
        .args(["-f", &path.to_string_lossy(), "--state-dir", &s.arg()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("task b CreateContainerConfigError: secret \"from-result\" not found"),
        "{text}"
    );
    assert!(!text.contains("should not run"), "{text}");
}

macro_rules! both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod podman {
            $(#[test]
            fn $name() {
                super::$name("podman");
            })*
        }
        mod process {
            $(#[test]
            fn $name() {
                super::$name("process");
            })*
        }
        mod process_without_root {
            $(#[test]
            fn $name() {
                super::$name("rewrite");
            })*
        }
    };
}

both_runtimes!(
    steps_scripts_params_and_results_of_a_taskrun,
    results_when_scoping_shared_workspace_and_finally,
    on_error_at_both_levels_stopping_and_finally,
    retries_and_a_task_timeout,
    parallel_tasks_overlap_and_a_matrix_gathers_results,
    a_pipeline_timeout_from_the_command_line,
    sigint_cancels_the_run_and_exits_130,
    a_task_with_params_and_a_host_directory_workspace,
    a_sidecar_runs_beside_the_steps,
    propagated_params_and_workspaces_run,
    steps_guarded_by_when_expressions,
    earlier_step_results_in_args_and_env,
    sidecar_probes_hold_the_first_step_until_ready,
    a_sidecar_never_ready_times_the_run_out_naming_it,
    a_sidecar_failing_before_ready_fails_the_run,
    a_sidecar_failing_its_startup_probe_is_killed,
    step_actions_with_params_a_template_and_an_unwritten_result,
    an_unwritten_step_action_result_fails_the_pipeline_that_reads_it,
    configmaps_and_secrets_feed_env_volumes_and_workspaces,
    missing_or_bad_values_are_refused_before_anything_runs,
    a_secret_named_by_a_result_is_checked_when_its_pod_is_made,
    regression_quick_steps_were_printed_out_of_order,
);

/// A Pipeline workspace bound to emptyDir that two tasks use: a warning
/// before the run (each TaskRun gets its own directory, as on Tekton), and
/// `-w NAME=volumeClaimTemplate` shares one directory across the run.
#[test]
fn an_empty_dir_shared_by_tasks_is_warned_about_and_a_claim_template_shares() {
    if !ready("process") {
        return;
    }
    let s = State::new("handoff-empty-dir");
    let (code, v, stderr) = run(
        "process",
        &s,
        "pipeline-handoff.yaml",
        &["-w", "src=emptyDir"],
    );
    assert!(
        stderr.contains(
            "warning: workspace \"src\" is bound to emptyDir: each TaskRun that uses it \
             (write, read) gets an empty directory of its own"
        ) && stderr.contains("-w src=volumeClaimTemplate"),
        "{stderr}"
    );
    // As on Tekton: the reader finds nothing.
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(condition(&v).0, "False");
    let s = State::new("handoff-claim");
    let (code, v, stderr) = run(
        "process",
        &s,
        "pipeline-handoff.yaml",
        &["-w", "src=volumeClaimTemplate"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(condition(&v).1, "Succeeded");
    assert!(!stderr.contains("warning: workspace"), "{stderr}");
    assert!(stderr.contains("[read : read] handed over"), "{stderr}");
    // The binding is recorded as the template it stands for.
    let b = &v["spec"]["workspaces"][0];
    assert_eq!(b["name"], "src");
    assert_eq!(
        b["volumeClaimTemplate"]["spec"]["accessModes"][0], "ReadWriteOnce",
        "{b}"
    );
}

#[test]
fn invalid_input_exits_2_and_records_nothing() {
    let s = State::new("invalid");
    let sd = s.arg();
    // A required param and workspace left out: both listed.
    let out = tkt(&["run", "-f", "runs/task-greet.yaml", "--state-dir", &sd]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing params: who") && err.contains("missing workspaces: out"),
        "{err}"
    );
    // Broken YAML: the file and line are named.
    let bad = s.0.join("bad.yaml");
    std::fs::create_dir_all(&s.0).unwrap();
    std::fs::write(
        &bad,
        "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {name: x\n",
    )
    .unwrap();
    let out = tkt(&["run", "-f", &bad.to_string_lossy(), "--state-dir", &sd]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("invalid YAML"),
        "{err}"
    );
    // Nothing was recorded.
    for kind in ["pr", "tr"] {
        let list = tkt(&[kind, "list", "--state-dir", &sd]);
        assert!(
            String::from_utf8_lossy(&list.stdout).starts_with("No "),
            "{kind}"
        );
    }
    assert!(!Path::new(&s.0.join("work")).exists());
}

/// Writes `text` as `name` in the state's directory; returns its path.
fn scratch_file(s: &State, name: &str, text: &str) -> String {
    std::fs::create_dir_all(&s.0).unwrap();
    let p = s.0.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const SAY_ACTION: &str = "apiVersion: tekton.dev/v1beta1\nkind: StepAction\nmetadata: {name: say}\nspec:\n  image: localhost/tektite/busybox:latest\n  params: [{name: what}]\n  env: [{name: WHAT, value: $(params.what)}]\n  script: echo \"$WHAT\"\n---\n";

#[test]
fn step_action_mistakes_exit_2_naming_file_line_and_field() {
    let s = State::new("stepaction-invalid");
    let sd = s.arg();
    let refused = |file: &str| {
        let out = tkt(&["run", "-f", file, "--state-dir", &sd]);
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // `image` beside `ref`: the StepAction defines it.
    let f = scratch_file(
        &s,
        "image-beside-ref.yaml",
        &format!(
            "{SAY_ACTION}apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {{name: r}}\nspec:\n  taskSpec:\n    steps:\n      - name: s\n        ref: {{name: say}}\n        image: alpine\n        params: [{{name: what, value: hi}}]\n"
        ),
    );
    let err = refused(&f);
    assert!(
        err.contains("image-beside-ref.yaml:18:")
            && err.contains("spec.taskSpec.steps[0].image")
            && err.contains("cannot be set on a step that uses a StepAction"),
        "{err}"
    );
    // A StepAction that is nowhere: named, with where it is referred to.
    let f = scratch_file(
        &s,
        "missing.yaml",
        "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {name: r}\nspec:\n  taskSpec:\n    steps:\n      - {name: s, ref: {name: not-there}}\n",
    );
    let err = refused(&f);
    assert!(
        err.contains("no such StepAction")
            && err.contains("spec.taskSpec.steps[0].ref.name \"not-there\""),
        "{err}"
    );
    // A param the StepAction needs and the step does not give.
    let f = scratch_file(
        &s,
        "lacks-param.yaml",
        &format!(
            "{SAY_ACTION}apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {{name: r}}\nspec:\n  taskSpec:\n    steps:\n      - {{name: s, ref: {{name: say}}}}\n"
        ),
    );
    let err = refused(&f);
    assert!(
        err.contains("lacks-param.yaml:16:")
            && err.contains("spec.taskSpec.steps[0].params")
            && err.contains("missing value for required param of StepAction \"say\": what"),
        "{err}"
    );
    // A StepAction's own mistake: a param in its script.
    let f = scratch_file(
        &s,
        "param-in-script.yaml",
        "apiVersion: tekton.dev/v1beta1\nkind: StepAction\nmetadata: {name: bad}\nspec:\n  image: alpine\n  params: [{name: x}]\n  script: echo $(params.x)\n",
    );
    let err = refused(&f);
    assert!(
        err.contains("param-in-script.yaml:7:")
            && err.contains("spec.script")
            && err.contains("params cannot be used in a StepAction's script"),
        "{err}"
    );
    assert!(!Path::new(&s.0.join("work")).exists());
}

/// With the static entrypoint a pod of steps needs no init container on
/// podman: `tkt` writes the scripts on the host (`place-scripts`' work, a
/// script of more than 64 KiB among them), then makes the pod and starts its
/// containers itself, sidecars first and then the steps in their order
/// (`podman kube play` starts them in no set order), two at a time: each
/// container starts after the one two places before it.
#[test]
fn podman_starts_sidecars_then_steps_in_their_order() {
    if !ready("podman") {
        return;
    }
    let s = State::new("podman-start-order");
    let mut yaml = String::from(
        "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata:\n  name: ordered\nspec:\n  taskSpec:\n    sidecars:\n      - name: helper\n        image: localhost/tektite/busybox:latest\n        script: |\n          exec sleep 60\n    steps:\n",
    );
    for i in 1..=5 {
        yaml.push_str(&format!(
            "      - name: s{i}\n        image: localhost/tektite/busybox:latest\n        script: |\n          echo \"step {i} of 6\"\n"
        ));
    }
    // A script longer than one shell argument: placed in pieces in a pod.
    let filler = format!("          # {}\n", "x".repeat(1000)).repeat(70);
    yaml.push_str(&format!(
        "      - name: s6\n        image: localhost/tektite/busybox:latest\n        script: |\n{filler}          echo \"step 6 of 6\"\n"
    ));
    let file = scratch_file(&s, "ordered.yaml", &yaml);
    let sd = s.arg();
    let out = tkt_run("podman")
        .args(["-f", &file, "--state-dir", &sd, "-o", "json", "--keep"])
        .env("TEKTITE_ENTRYPOINT", static_entrypoint())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pod_name = "ordered-pod";
    let started: Vec<(String, String)> = (Command::new("podman").args([
        "ps",
        "--all",
        "--filter",
        &format!("pod={pod_name}"),
        "--format",
        "{{.Names}}",
    ]))
    .output()
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default()
    .lines()
    .filter(|n| !n.ends_with("-infra"))
    .map(|n| {
        let at = Command::new("podman")
            .args(["inspect", "--format", "{{.State.StartedAt.UnixNano}}", n])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        (n.to_string(), at)
    })
    .collect();
    let _ = Command::new("podman")
        .args(["pod", "rm", "--force", "--time", "0", pod_name])
        .output();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<usize> = (1..=6)
        .map(|i| {
            stderr
                .find(&format!("step {i} of 6"))
                .unwrap_or_else(|| panic!("no step {i}: {stderr}"))
        })
        .collect();
    assert!(lines.is_sorted(), "steps out of order: {stderr}");
    let played = walk(&s.0.join("work"))
        .into_iter()
        .find(|p| p.ends_with("pod.json"))
        .unwrap_or_else(|| panic!("no pod.json kept under {}", s.0.display()));
    let pod: Value = serde_json::from_slice(&std::fs::read(&played).unwrap()).unwrap();
    let init = &pod["spec"]["initContainers"];
    assert!(
        init.as_array().is_none_or(Vec::is_empty),
        "init containers: {init}"
    );
    let script = walk(&s.0.join("work"))
        .into_iter()
        .find(|p| p.ends_with("script-5"))
        .expect("the last step's script, placed on the host");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&script).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // podman's own record of each container's start.
    let mut expected = vec![format!("{pod_name}-sidecar-helper")];
    expected.extend((1..=6).map(|i| format!("{pod_name}-step-s{i}")));
    let at: Vec<u128> = expected
        .iter()
        .map(|n| {
            let (_, t) = started
                .iter()
                .find(|(m, _)| m == n)
                .unwrap_or_else(|| panic!("{n} not made: {started:?}"));
            t.parse()
                .unwrap_or_else(|_| panic!("{n} not started: {started:?}"))
        })
        .collect();
    // Two starters take every other container each, in order.
    for i in 0..at.len() - 2 {
        assert!(
            at[i] < at[i + 2],
            "{} started after {}: {started:?}",
            expected[i],
            expected[i + 2]
        );
    }
}

/// When podman cannot start the made containers, the TaskRun fails naming
/// `podman start` and podman's message, and the pod podman made is gone:
/// nothing is left made or running.
#[test]
fn a_pod_podman_cannot_start_fails_the_run_and_is_removed() {
    if !ready("podman") {
        return;
    }
    let s = State::new("podman-start-fails");
    let (path, calls) = podman_recorder(&s);
    // The recorder, refusing `podman start` as a broken runtime would.
    let wrapper = s.0.join("bin/podman");
    let text = std::fs::read_to_string(&wrapper).unwrap().replacen(
        "exec ",
        "[ \"$1\" = start ] && { echo 'Error: cannot start: the runtime is broken' >&2; exit 125; }\nexec ",
        1,
    );
    std::fs::write(&wrapper, text).unwrap();
    let file = scratch_file(
        &s,
        "cannot-start.yaml",
        "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata:\n  name: cannot-start\nspec:\n  taskSpec:\n    steps:\n      - name: a\n        image: localhost/tektite/busybox:latest\n        script: echo never\n",
    );
    let sd = s.arg();
    let out = tkt_run("podman")
        .args(["-f", &file, "--state-dir", &sd, "-o", "json"])
        .env("TEKTITE_ENTRYPOINT", static_entrypoint())
        .env("PATH", &path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let left = Command::new("podman")
        .args(["pod", "exists", "cannot-start-pod"])
        .status()
        .unwrap();
    let _ = Command::new("podman")
        .args(["pod", "rm", "--force", "--time", "0", "cannot-start-pod"])
        .output();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let (status, reason, message) = condition(&v);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "PodCreationFailed")
    );
    assert!(
        message.contains("podman start") && message.contains("the runtime is broken"),
        "{message}"
    );
    assert!(!left.success(), "the pod is left behind");
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert!(
        calls.contains("kube play --log-driver k8s-file --start=false"),
        "{calls}"
    );
    assert!(!stderr.contains("never"), "{stderr}");
}

/// With the static entrypoint, `tkt` looked for a container's log file as
/// soon as its conmon's pid file was there, which may be just before conmon
/// makes the file: the follower then fell back to reading the output once
/// the container had ended, so a running step showed nothing (two runs in
/// three here). Three runs of a step that prints a line and then runs on:
/// each time the line reaches the store while it runs.
#[test]
fn regression_podman_showed_a_running_steps_output_only_once_it_ended() {
    if !ready("podman") {
        return;
    }
    let s = State::new("podman-live-output");
    let file = scratch_file(
        &s,
        "live.yaml",
        "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata:\n  generateName: live-\nspec:\n  taskSpec:\n    steps:\n      - {name: run, image: localhost/tektite/busybox:latest, script: \"echo step running; sleep 124\"}\n",
    );
    let sd = s.arg();
    for attempt in 1..=3 {
        let mut child = tkt_run("podman")
            .args(["-f", &file, "--state-dir", &sd])
            .env("TEKTITE_ENTRYPOINT", static_entrypoint())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let shown = || {
            std::fs::read_dir(s.0.join("logs"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|d| {
                    std::fs::read_to_string(d.path().join("step-run.log"))
                        .is_ok_and(|t| t.contains("step running"))
                })
                .count()
        };
        let start = Instant::now();
        while shown() < attempt && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let live = shown();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let out = wait_bounded(&mut child);
        assert_eq!(out.status.code(), Some(130));
        assert_eq!(live, attempt, "run {attempt}: not shown while it ran");
    }
}
