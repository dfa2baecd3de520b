//! Real containers: pods in Tekton's layout played with `podman kube play`.
//!
//! An init container from `localhost/tektite/entrypoint` runs `entrypoint
//! init` to copy the static binary into an emptyDir and link `/tekton/steps`;
//! a second one places a base64 script and decodes it with `decode-script`;
//! then three step containers from `localhost/tektite/busybox`, all started
//! at once, are chained by the marker files. The run directories and the
//! workspace are hostPath volumes, so the test reads markers, reports and the
//! workspace from the host, and the exit codes from `podman wait`.
//!
//! `hack/images.sh` builds both images (`hack/test.sh` runs it). Without
//! podman these tests fail, unless `TEKTITE_SKIP_PODMAN=1` is set.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BUSYBOX: &str = "localhost/tektite/busybox:latest";
const ENTRYPOINT: &str = "localhost/tektite/entrypoint:latest";
/// Exit code of a step skipped because an earlier one failed (README).
const SKIPPED: i64 = 243;

/// Whether the podman tests should run; panics with what to do when podman
/// or the images are missing.
fn podman_ready() -> bool {
    if std::env::var_os("TEKTITE_SKIP_PODMAN").is_some_and(|v| v == "1") {
        eprintln!("TEKTITE_SKIP_PODMAN=1: podman test not run");
        return false;
    }
    let version = Command::new("podman").arg("--version").output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "podman is not installed: run hack/test.sh (it installs podman, runc and busybox-static), \
         or set TEKTITE_SKIP_PODMAN=1 to leave these tests out"
    );
    for image in [BUSYBOX, ENTRYPOINT] {
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

/// A pod played with `podman kube play`; removed (with its directory) on drop.
struct PlayedPod {
    name: String,
    dir: PathBuf,
}

impl Drop for PlayedPod {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("podman")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&["pod", "rm", "--force", &self.name]);
        for vol in ["bin", "steps", "scripts", "results"] {
            quiet(&[
                "volume",
                "rm",
                "--force",
                &format!("{}-tekton-internal-{vol}", self.name),
            ]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Step {
    name: &'static str,
    /// The command after `--`.
    command: Vec<String>,
    /// Extra entrypoint flags.
    flags: Vec<&'static str>,
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap()
}

impl PlayedPod {
    /// Writes the pod YAML (JSON is YAML) for `steps` and plays it.
    /// `script` is placed at `/tekton/scripts/script` by an init container.
    fn play(test: &str, steps: &[Step], script: &str) -> PlayedPod {
        let name = format!("ep-{test}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("workspace")).unwrap();
        let pod = PlayedPod {
            name: name.clone(),
            dir: dir.clone(),
        };

        let names: Vec<String> = steps.iter().map(|s| format!("step-{}", s.name)).collect();
        let mut init = vec![
            "/ko-app/entrypoint".to_string(),
            "init".into(),
            "/ko-app/entrypoint".into(),
            "/tekton/bin/entrypoint".into(),
        ];
        init.extend(names.iter().cloned());
        let encoded = base64_encode(script.as_bytes());
        let place = format!(
            "printf '%s' '{encoded}' > /tekton/scripts/script && \
             /tekton/bin/entrypoint decode-script /tekton/scripts/script && \
             chmod 0755 /tekton/scripts/script"
        );
        // podman 4 plays an emptyDir as a named volume called after the
        // pod's volume and shares it with every pod using that name, so the
        // names carry the pod's.
        let m = |vol: &str, path: &str, ro: bool| {
            format!(r#"{{"name":"{name}-{vol}","mountPath":"{path}","readOnly":{ro}}}"#)
        };
        let mut containers = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let mut cmd = vec!["/tekton/bin/entrypoint".to_string()];
            if i > 0 {
                cmd.extend(["-wait_file".into(), format!("/tekton/run/{}/out", i - 1)]);
            }
            cmd.extend([
                "-post_file".into(),
                format!("/tekton/run/{i}/out"),
                "-termination_path".into(),
                "/tekton/termination".into(),
                "-step_metadata_dir".into(),
                format!("/tekton/run/{i}/status"),
            ]);
            cmd.extend(step.flags.iter().map(|f| f.to_string()));
            cmd.push("--".into());
            cmd.extend(step.command.iter().cloned());
            let mut mounts = vec![
                m("tekton-internal-bin", "/tekton/bin", true),
                m("tekton-internal-steps", "/tekton/steps", true),
                m("tekton-internal-scripts", "/tekton/scripts", true),
                m("tekton-internal-results", "/tekton/results", false),
                m("workspace", "/workspace", false),
            ];
            // Each step writes only its own run directory.
            for j in 0..steps.len() {
                mounts.push(m(&format!("run-{j}"), &format!("/tekton/run/{j}"), j != i));
            }
            containers.push(format!(
                r#"{{"name":"{}","image":"{BUSYBOX}","command":{},"volumeMounts":[{}]}}"#,
                names[i],
                json(&cmd),
                mounts.join(",")
            ));
        }
        let host = |vol: &str, sub: &str| {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).unwrap();
            format!(
                r#"{{"name":"{name}-{vol}","hostPath":{{"path":{},"type":"Directory"}}}}"#,
                json(&path.to_string_lossy())
            )
        };
        let empty = |vol: &str| format!(r#"{{"name":"{name}-{vol}","emptyDir":{{}}}}"#);
        let mut volumes = vec![
            empty("tekton-internal-bin"),
            empty("tekton-internal-steps"),
            empty("tekton-internal-scripts"),
            empty("tekton-internal-results"),
            host("workspace", "workspace"),
        ];
        for j in 0..steps.len() {
            volumes.push(host(&format!("run-{j}"), &format!("run/{j}")));
        }
        let yaml = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},
"spec":{{"restartPolicy":"Never",
"initContainers":[
 {{"name":"prepare","image":"{ENTRYPOINT}","command":{init},
   "volumeMounts":[{bin},{stepsdir}]}},
 {{"name":"place-scripts","image":"{BUSYBOX}","command":{place},
   "volumeMounts":[{bin_ro},{scripts}]}}],
"containers":[{containers}],
"volumes":[{volumes}]}}}}"#,
            init = json(&init),
            place = json(&sh(&place)),
            bin = m("tekton-internal-bin", "/tekton/bin", false),
            bin_ro = m("tekton-internal-bin", "/tekton/bin", true),
            stepsdir = m("tekton-internal-steps", "/tekton/steps", false),
            scripts = m("tekton-internal-scripts", "/tekton/scripts", false),
            containers = containers.join(",\n"),
            volumes = volumes.join(",\n"),
        );
        let file = dir.join("pod.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = Command::new("podman")
            .args(["kube", "play", "--network", "none"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman kube play failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pod
    }

    /// Waits for every step container and returns their exit codes, in order.
    fn exit_codes(&self, steps: &[Step]) -> Vec<i64> {
        let containers: Vec<String> = steps
            .iter()
            .map(|s| format!("{}-step-{}", self.name, s.name))
            .collect();
        let mut wait = Command::new("podman")
            .arg("wait")
            .args(&containers)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A guard against a hung pod, not a timing assertion.
        let start = Instant::now();
        while wait.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(120) {
                let _ = wait.kill();
                panic!("pod {} did not finish: {}", self.name, self.describe());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = wait.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "podman wait failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    }

    fn describe(&self) -> String {
        let out = Command::new("podman")
            .args(["ps", "--all", "--pod", "--filter"])
            .arg(format!("pod={}", self.name))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn logs(&self, step: &str) -> String {
        let out = Command::new("podman")
            .args(["logs", &format!("{}-step-{step}", self.name)])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn report(&self, i: usize) -> Value {
        let file = self.path(&format!("run/{i}/status/report.json"));
        let text = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), self.describe()));
        serde_json::from_slice(&text).unwrap()
    }
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn three_chained_steps_run_in_order_in_real_containers() {
    if !podman_ready() {
        return;
    }
    let steps = [
        Step {
            name: "one",
            command: sh("echo hello > /tekton/results/greeting; echo one >> /workspace/log"),
            flags: vec!["-results", "greeting"],
        },
        Step {
            name: "two",
            command: sh("echo two >> /workspace/log; exit 3"),
            flags: vec!["-on_error", "continue"],
        },
        Step {
            name: "three",
            command: vec![
                "/tekton/scripts/script".into(),
                "first arg".into(),
                "second".into(),
            ],
            flags: vec![],
        },
    ];
    let script = "#!/bin/sh\nset -e\n\
                  echo \"three $# [$1] [$2]\" >> /workspace/log\n\
                  ls /tekton/steps | sort | tr '\\n' ' ' >> /workspace/log\n";
    let pod = PlayedPod::play("chain", &steps, script);
    let codes = pod.exit_codes(&steps);
    assert_eq!(codes, vec![0, 0, 0], "{}", pod.logs("three"));

    // Strict order: every step saw the previous one's line in the workspace.
    let log = std::fs::read_to_string(pod.path("workspace/log")).unwrap();
    assert_eq!(
        log,
        "one\ntwo\nthree 2 [first arg] [second]\n0 1 2 step-one step-three step-two "
    );

    let reports: Vec<Value> = (0..3).map(|i| pod.report(i)).collect();
    let names: Vec<&str> = reports
        .iter()
        .map(|r| r["step"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["step-one", "step-two", "step-three"]);
    let reasons: Vec<&str> = reports
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["Completed", "Continued", "Completed"]);
    assert_eq!(reports[1]["exitCode"], 3, "the real code is recorded");
    assert_eq!(
        reports[0]["results"],
        serde_json::json!([{"name": "greeting", "kind": "task", "value": "hello\n"}])
    );
    // RFC 3339 with microseconds in UTC: the lexical order is the time order.
    for w in reports.windows(2) {
        let (prev_end, next_start) = (
            w[0]["finishedAt"].as_str().unwrap(),
            w[1]["startedAt"].as_str().unwrap(),
        );
        assert!(prev_end <= next_start, "{prev_end} > {next_start}");
    }
    for i in 0..3 {
        assert!(pod.path(&format!("run/{i}/out")).exists());
        assert!(!pod.path(&format!("run/{i}/out.err")).exists());
        let code = std::fs::read_to_string(pod.path(&format!("run/{i}/status/exitCode"))).unwrap();
        assert_eq!(code.trim(), if i == 1 { "3" } else { "0" });
    }
}

#[test]
fn a_failing_step_skips_the_rest_in_real_containers() {
    if !podman_ready() {
        return;
    }
    let steps = [
        Step {
            name: "ok",
            command: sh("echo ok >> /workspace/log"),
            flags: vec![],
        },
        Step {
            name: "fails",
            command: sh("echo fails >> /workspace/log; exit 7"),
            flags: vec![],
        },
        Step {
            name: "never",
            command: vec!["/tekton/scripts/script".into()],
            flags: vec![],
        },
    ];
    let pod = PlayedPod::play("skip", &steps, "#!/bin/sh\necho never >> /workspace/log\n");
    let codes = pod.exit_codes(&steps);
    assert_eq!(codes, vec![0, 7, SKIPPED], "{}", pod.logs("never"));

    let log = std::fs::read_to_string(pod.path("workspace/log")).unwrap();
    assert_eq!(log, "ok\nfails\n", "the skipped step's command did not run");
    assert!(pod.path("run/0/out").exists());
    assert!(pod.path("run/1/out.err").exists());
    assert!(pod.path("run/2/out.err").exists());
    assert!(!pod.path("run/2/out").exists());
    let reasons: Vec<String> = (0..3)
        .map(|i| pod.report(i)["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons, ["Completed", "Error", "Skipped"]);
    assert_eq!(pod.report(1)["exitCode"], 7);
    assert!(
        pod.logs("never").contains("entrypoint: "),
        "the skip is explained on stderr: {}",
        pod.logs("never")
    );
}

/// Regression: in a container the wrapper started every step with SIGHUP,
/// SIGINT, SIGQUIT, SIGUSR1, SIGUSR2 and SIGTERM blocked (`SigBlk:
/// 0000000000004a07`), so a step could never shut down gracefully when its
/// pod was deleted. Now a step starts with nothing blocked or ignored, and
/// one that traps SIGTERM runs its trap when its container is stopped.
#[test]
fn regression_steps_start_with_signals_blocked_in_real_containers() {
    if !podman_ready() {
        return;
    }
    let steps = [
        Step {
            name: "masks",
            // Not through `sh -c`: busybox's shell runs its last command
            // with SIGQUIT ignored.
            command: vec![
                "grep".into(),
                "-E".into(),
                "^Sig(Blk|Ign):".into(),
                "/proc/self/status".into(),
            ],
            flags: vec![],
        },
        Step {
            name: "trap",
            command: sh("trap 'echo term > /workspace/term; exit 0' TERM; \
                 touch /workspace/ready; while true; do sleep 0.05; done"),
            flags: vec![],
        },
    ];
    let pod = PlayedPod::play("signals", &steps, "#!/bin/sh\n");
    let start = Instant::now();
    while !pod.path("workspace/ready").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the trap step did not start: {}",
            pod.describe()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop = Command::new("podman")
        .args(["stop", "--time", "30", &format!("{}-step-trap", pod.name)])
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert_eq!(pod.exit_codes(&steps), vec![0, 0], "{}", pod.logs("trap"));
    let masks = pod.logs("masks");
    assert_eq!(common::sig_masks(&masks), (0, 0), "{masks}");
    assert_eq!(
        std::fs::read_to_string(pod.path("workspace/term")).unwrap(),
        "term\n",
        "the step's trap ran"
    );
}
