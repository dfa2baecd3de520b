//! Pods built by the engine, adapted for podman (`tektite_engine::podman`),
//! played for real with `podman kube play`; then the engine reads the
//! TaskRun status back from what podman and the step reports say.
//!
//! Needs podman and the local images (`hack/setup-podman.sh`,
//! `hack/images.sh`); fails without them unless `TEKTITE_SKIP_PODMAN=1`.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, Pod,
    PodStatus,
};
use k8s_openapi::jiff::Timestamp;
use tektite_api::load::Object;
use tektite_api::param::ParamValue;
use tektite_api::v1::{TaskRun, TaskRunStatus};
use tektite_engine::pod::{self, Config};
use tektite_engine::{podman, status};

const BUSYBOX: &str = "localhost/tektite/busybox:latest";

fn podman_ready() -> bool {
    if std::env::var_os("TEKTITE_SKIP_PODMAN").is_some_and(|v| v == "1") {
        eprintln!("TEKTITE_SKIP_PODMAN=1: podman test not run");
        return false;
    }
    let ok = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "podman is not installed: run hack/test.sh (or hack/setup-podman.sh), \
         or set TEKTITE_SKIP_PODMAN=1 to leave these tests out"
    );
    for image in [BUSYBOX, "localhost/tektite/entrypoint:latest"] {
        let exists = Command::new("podman")
            .args(["image", "exists", image])
            .status()
            .unwrap();
        assert!(
            exists.success(),
            "image {image} is missing: run hack/images.sh"
        );
    }
    true
}

/// A played pod; removed with its directory on drop.
struct Played {
    name: String,
    dir: PathBuf,
    pod: Pod,
}

impl Drop for Played {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["pod", "rm", "--force", "--time", "0", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn task_run(yaml: &str) -> TaskRun {
    let out = tektite_api::load_str("test.yaml", yaml);
    assert!(
        out.diagnostics
            .iter()
            .all(|d| d.severity != tektite_api::Severity::Error),
        "{:?}",
        out.diagnostics
    );
    match out.objects.into_iter().next().unwrap().object {
        Object::TaskRun(tr) => *tr,
        _ => panic!("not a TaskRun"),
    }
}

/// Builds the TaskRun's pod, adapts it and plays it.
fn play(tr: &TaskRun, test: &str) -> Played {
    let config = Config {
        release: "test".into(),
        ..Config::default()
    };
    let spec = tr.spec.task_spec.clone().unwrap();
    let plan = pod::build(
        pod::Input {
            task_run: tr,
            spec: &spec,
            task_name: None,
            images: &BTreeMap::new(),
        },
        &config,
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("engine-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let adapted = podman::adapt(&plan.pod, &dir.join("run"), &dir.join("claims"));
    for d in &adapted.dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    if let Some(f) = &adapted.ready_file {
        // No controller here: the sidecars are taken as ready at once.
        std::fs::write(f, "READY").unwrap();
    }
    let name = adapted.pod.metadata.name.clone().unwrap();
    let played = Played {
        name: name.clone(),
        dir: dir.clone(),
        pod: plan.pod.clone(),
    };
    let file = dir.join("pod.json");
    std::fs::write(&file, serde_json::to_vec(&adapted.pod).unwrap()).unwrap();
    let out = Command::new("podman")
        .args(["kube", "play", "--network", "none"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman kube play: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    played
}

/// Waits for the step containers to end (bounded: a hang guard, not a
/// timing assertion).
fn wait_steps(p: &Played) {
    let steps: Vec<String> = p
        .pod
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .filter(|c| c.name.starts_with("step-"))
        .map(|c| format!("{}-{}", p.name, c.name))
        .collect();
    let mut wait = Command::new("podman")
        .arg("wait")
        .args(&steps)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while wait.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = wait.kill();
            panic!("pod {} did not finish", p.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a kubelet would report for the pod: container states from `podman
/// inspect`, and the step reports as the annotations the entrypoint writes
/// on a cluster (locally it writes them to the run directory).
fn observe(p: &Played) -> Pod {
    let mut pod = p.pod.clone();
    let mut statuses = Vec::new();
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let containers = pod.spec.as_ref().unwrap().containers.clone();
    for (i, c) in containers.iter().enumerate() {
        let out = Command::new("podman")
            .args([
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.ExitCode}}",
            ])
            .arg(format!("{}-{}", p.name, c.name))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (state, code) = text.split_once(' ').unwrap();
        let code: i32 = code.parse().unwrap();
        let state = if state == "exited" {
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }
        } else {
            ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }
        };
        statuses.push(ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: Some(state),
            ..Default::default()
        });
        if c.name.starts_with("step-") {
            let report = p
                .dir
                .join(format!("run/tekton-internal-run-{i}/status/report.json"));
            if let Ok(r) = std::fs::read_to_string(&report) {
                annotations.insert(format!("tektite.dev/step.{}", c.name), r);
            }
        }
    }
    pod.metadata.annotations = Some(annotations);
    let all_done = statuses
        .iter()
        .filter(|s| s.name.starts_with("step-"))
        .all(|s| s.state.as_ref().unwrap().terminated.is_some());
    let failed = statuses.iter().any(|s| {
        s.name.starts_with("step-")
            && s.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .is_some_and(|t| t.exit_code != 0)
    });
    pod.status = Some(PodStatus {
        phase: Some(
            match (all_done, failed) {
                (true, true) => "Failed",
                (true, false) => "Succeeded",
                _ => "Running",
            }
            .into(),
        ),
        container_statuses: Some(statuses),
        ..Default::default()
    });
    pod
}

fn run(tr: &TaskRun, test: &str) -> (TaskRunStatus, Played) {
    let p = play(tr, test);
    wait_steps(&p);
    let observed = observe(&p);
    let spec = tr.spec.task_spec.clone().unwrap();
    let st = status::from_pod(tr, &spec, &observed, Timestamp::now());
    (st, p)
}

fn condition(st: &TaskRunStatus) -> (String, String) {
    let c = tektite_api::v1::Condition::succeeded(&st.conditions).unwrap();
    (c.reason.clone().unwrap(), c.status.clone())
}

#[test]
fn scripts_params_results_and_workspaces_in_real_containers() {
    if !podman_ready() {
        return;
    }
    let tr = task_run(&format!(
        r#"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata: {{name: engine-full-{pid}, namespace: ci, uid: u-1}}
spec:
  params:
    - {{name: words, value: [alpha, "beta gamma"]}}
    - {{name: greeting, value: hello}}
  workspaces:
    - {{name: shared, persistentVolumeClaim: {{claimName: cache}}}}
    - {{name: scratch, emptyDir: {{}}}}
  taskSpec:
    params:
      - {{name: words, type: array}}
      - {{name: greeting}}
    workspaces:
      - name: shared
      - name: scratch
    results:
      - name: count
      - name: list
        type: array
    stepTemplate:
      image: {BUSYBOX}
      env:
        - {{name: FROM_TEMPLATE, value: "$(params.greeting)"}}
    steps:
      - name: write
        command: [sh, -c, 'printf "%s|" "$@" > $(workspaces.shared.path)/words; echo "$FROM_TEMPLATE" > $(workspaces.scratch.path)/g', --]
        args: ["$(params.words[*])"]
      - name: lint
        onError: continue
        script: |
          exit 5
      - name: count
        script: |
          #!/bin/sh
          set -eu
          test "$(cat $(workspaces.scratch.path)/g)" = hello
          words=$(cat $(workspaces.shared.path)/words)
          test "$words" = "alpha|beta gamma|"
          printf 2 > $(results.count.path)
          printf '["%s","%s"]' a b > $(results.list.path)
          cat $(steps.step-lint.exitCode.path) > $(workspaces.shared.path)/lint-code
"#,
        pid = std::process::id()
    ));
    let (st, p) = run(&tr, "full");
    assert_eq!(
        condition(&st),
        ("Succeeded".into(), "True".into()),
        "{st:#?}"
    );
    let reasons: Vec<_> = st
        .steps
        .iter()
        .map(|s| s.termination_reason.clone().unwrap())
        .collect();
    assert_eq!(reasons, ["Completed", "Continued", "Completed"]);
    assert_eq!(st.steps[1].terminated.as_ref().unwrap().exit_code, 5);
    let results: BTreeMap<_, _> = st
        .results
        .iter()
        .map(|r| (r.name.as_str(), r.value.clone()))
        .collect();
    assert_eq!(results["count"], ParamValue::String("2".into()));
    assert_eq!(
        results["list"],
        ParamValue::Array(vec!["a".into(), "b".into()])
    );
    // The claim is a directory shared beyond the pod.
    let code = std::fs::read_to_string(p.dir.join("claims/cache/lint-code")).unwrap();
    assert_eq!(code.trim(), "5");
}

#[test]
fn a_failing_step_fails_the_run_and_skips_the_rest_in_real_containers() {
    if !podman_ready() {
        return;
    }
    let tr = task_run(&format!(
        r#"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata: {{name: engine-fail-{pid}, namespace: ci}}
spec:
  taskSpec:
    sidecars:
      - name: helper
        image: {BUSYBOX}
        command: [sleep, "30"]
    steps:
      - {{name: ok, image: {BUSYBOX}, command: ["true"]}}
      - {{name: boom, image: {BUSYBOX}, command: [sh, -c, "exit 3"]}}
      - {{name: never, image: {BUSYBOX}, command: [sh, -c, "echo ran > /workspace/never"]}}
"#,
        pid = std::process::id()
    ));
    let (st, p) = run(&tr, "fail");
    let (reason, status) = condition(&st);
    assert_eq!(
        (reason.as_str(), status.as_str()),
        ("StepFailed", "False"),
        "{st:#?}"
    );
    let msg = tektite_api::v1::Condition::succeeded(&st.conditions)
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert_eq!(msg, "\"step-boom\" exited with code 3: Error");
    let reasons: Vec<_> = st
        .steps
        .iter()
        .map(|s| s.termination_reason.clone().unwrap())
        .collect();
    assert_eq!(reasons, ["Completed", "Error", "Skipped"]);
    assert!(!Path::new(&p.dir.join("run/tekton-internal-workspace/never")).exists());
}
