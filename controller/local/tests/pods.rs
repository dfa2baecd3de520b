//! Pods built by the engine, played for real by the podman runtime
//! (`tektite_engine::podman` adaptation, `podman kube play`); then the engine
//! reads the TaskRun status back from what the runtime observes.
//!
//! Needs podman and the local images (`hack/setup-podman.sh`,
//! `hack/images.sh`); fails without them unless `TEKTITE_SKIP_PODMAN=1`.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use tektite_api::load::Object;
use tektite_api::param::ParamValue;
use tektite_api::v1::{TaskRun, TaskRunStatus};
use tektite_engine::pod::{self, Config};
use tektite_engine::status;
use tektite_local::runtime::{PodEnv, PodmanPod};
use tektite_local::store::Store;

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

/// A pod played by the local runtime; removed with its directory on drop.
struct Played {
    dir: PathBuf,
    pod: Option<PodmanPod>,
}

impl Drop for Played {
    fn drop(&mut self) {
        if let Some(p) = self.pod.take() {
            p.finish(false);
        }
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

/// Builds the TaskRun's pod, plays it with the podman runtime, waits
/// (bounded: a hang guard, not a timing assertion) for its steps to end, and
/// reads the status back through the engine.
fn run(tr: &TaskRun, test: &str) -> (TaskRunStatus, Played) {
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
    let dir = std::env::temp_dir().join(format!("local-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(Some(&dir.join("state"))).unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    // The runner's side of the channel: drained, as the runner drains it.
    std::thread::spawn(move || for _ in rx {});
    let name = tr.metadata.name.clone().unwrap();
    let pod = PodmanPod::start(
        &plan.pod,
        &PodEnv {
            task_run: &name,
            run_dir: &dir.join("run"),
            fast_dir: &dir.join("run"),
            claims: &BTreeMap::new(),
            claims_dir: &dir.join("claims"),
            store: &store,
            signals: &tx,
            grace: Duration::from_secs(2),
            journal: None,
            plain_http: &[],
        },
    )
    .unwrap();
    let mut played = Played {
        dir,
        pod: Some(pod),
    };
    let p = played.pod.as_mut().unwrap();
    // No controller here: the sidecars are taken as ready at once.
    p.mark_ready();
    let start = Instant::now();
    let observed = loop {
        let o = p.observe().unwrap();
        if matches!(
            o.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            break o;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "pod {name} did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let st = status::from_pod(tr, &spec, &observed, Timestamp::now());
    (st, played)
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
