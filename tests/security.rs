//! A step reaches nothing outside its pod: the real `tkt` on both runtimes,
//! attacked the way the security review did.
//!
//! Each regression test is named after the attack it reproduces and fails
//! (or hangs, killed by a guard) without its fix. The podman cases need
//! podman and the local images and fail without them, unless
//! `TEKTITE_SKIP_PODMAN=1`; the process cases need root for their mount
//! namespaces (they run in the rewrite mode otherwise).

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod util;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use util::{Scratch, object, reason, text, wait_guarded};

/// A host directory a step must not reach: mode 0700, one file in it.
fn host_dir(s: &Scratch) -> PathBuf {
    let d = s.0.join("host-secrets");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("id_ed25519"), "host key").unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// Asserts `d` is as [`host_dir`] made it: not chmodded, nothing added.
fn untouched(d: &Path) {
    let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} was chmodded", d.display());
    let names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["id_ed25519"], "a step wrote into {}", d.display());
}

/// `tkt run` of `yaml` on `rt` in the scratch store, with `args` and
/// `env`, guarded against hangs.
fn tkt(rt: &str, s: &Scratch, yaml: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let file = s.file("run.yaml", yaml);
    let mut cmd = util::tkt_run(rt);
    cmd.args(["--state-dir", &s.state_arg(), "-f", &file])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    wait_guarded(cmd.spawn().unwrap(), "tkt run")
}

/// Runs `yaml` with `tkt run -o json` on `rt`: the run, and stderr.
fn run(rt: &str, s: &Scratch, yaml: &str, env: &[(&str, &str)]) -> (serde_json::Value, String) {
    let o = tkt(rt, s, yaml, &["-o", "json"], env);
    (object(&o), text(&o.stderr))
}

fn image(rt: &str) -> &'static str {
    if rt == "podman" {
        "localhost/tektite/busybox:latest"
    } else {
        "busybox"
    }
}

// ---------------------------------------------------------------- workspaces

/// Regression: task A left a symlink to a host directory in a workspace;
/// task B bound the workspace with `subPath` through it, and `tkt`
/// (root) made the host directory 0777 and mounted it read-write into B.
fn a_workspace_symlink_does_not_give_a_later_task_the_host(rt: &str) {
    let s = Scratch::new(&format!("symlink-{rt}"));
    let host = host_dir(&s);
    let yaml = format!(
        r#"apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: escape
spec:
  workspaces:
    - name: ws
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources: {{requests: {{storage: 1Mi}}}}
  pipelineSpec:
    workspaces:
      - name: ws
    tasks:
      - name: plant
        workspaces: [{{name: ws, workspace: ws}}]
        taskSpec:
          workspaces: [{{name: ws}}]
          steps:
            - name: s
              image: {image}
              script: ln -s {host} $(workspaces.ws.path)/src
      - name: use
        runAfter: [plant]
        workspaces: [{{name: ws, workspace: ws, subPath: src}}]
        taskSpec:
          workspaces: [{{name: ws}}]
          steps:
            - name: s
              image: {image}
              script: echo pwned > $(workspaces.ws.path)/authorized_keys
"#,
        image = image(rt),
        host = host.display()
    );
    let (pr, stderr) = run(rt, &s, &yaml, &[]);
    untouched(&host);
    assert_eq!(reason(&pr), "Failed", "{pr:#}\n{stderr}");
    let all = format!("{pr}{stderr}");
    assert!(
        all.contains("is a symbolic link, which is not followed"),
        "the failure says why: {all}"
    );
}

#[test]
fn regression_a_workspace_symlink_gives_a_later_task_the_host_podman() {
    if util::podman_ready() {
        a_workspace_symlink_does_not_give_a_later_task_the_host("podman");
    }
}

#[test]
fn regression_a_workspace_symlink_gives_a_later_task_the_host_process() {
    a_workspace_symlink_does_not_give_a_later_task_the_host("process");
}

/// Regression: params flow into `claimName` and `subPath`, which passed
/// validation as text; a claim named `../../…/dir` was that host
/// directory, chmodded 0777 and mounted, and an absolute subPath made a
/// step's workspace a host directory.
#[test]
fn regression_claim_name_and_subpath_params_reach_host_directories() {
    let s = Scratch::new("claim-param");
    let host = host_dir(&s);
    // From the claims directory, far enough up to be at `/`.
    let up = "../".repeat(s.0.components().count() + 8);
    let cases = [
        (
            "persistentVolumeClaim: {claimName: $(params.p)}",
            format!("{up}{}", host.display().to_string().trim_start_matches('/')),
            "is not a valid claim name",
        ),
        (
            "emptyDir: {}\n      subPath: $(params.p)",
            host.display().to_string(),
            "must be a relative path inside the volume",
        ),
    ];
    for (binding, value, expected) in cases {
        let yaml = format!(
            r#"apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: escape
spec:
  params:
    - {{name: p, value: "{value}"}}
  workspaces:
    - name: ws
      {binding}
  taskSpec:
    params: [{{name: p}}]
    workspaces: [{{name: ws}}]
    steps:
      - name: s
        image: busybox
        script: echo pwned > $(workspaces.ws.path)/authorized_keys
"#
        );
        let o = tkt("process", &s, &yaml, &[], &[]);
        untouched(&host);
        let stderr = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("TaskRunValidationFailed: spec.workspaces[0].")
                && stderr.contains(expected)
                && stderr.contains("nothing was run"),
            "{stderr}"
        );
    }
}

// ---------------------------------------------------------------- files read back

/// Regression: a step planted `report.json.tmp` as a link to a host path;
/// the entrypoint renamed the link into place and `tkt` read the report
/// through it on the host. A link to a FIFO hung `tkt` for good.
#[test]
fn regression_a_planted_report_link_makes_tkt_read_a_host_file_podman() {
    if !util::podman_ready() {
        return;
    }
    let s = Scratch::new("report-link");
    // Directly in /tmp, which the container has too: the old entrypoint
    // wrote its report there (in the container) and renamed the link into
    // place, which `tkt` then followed on the host to this FIFO.
    let fifo = PathBuf::from(format!("/tmp/tektite-report-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let yaml = format!(
        r#"apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: planted
spec:
  taskSpec:
    steps:
      - name: s
        image: localhost/tektite/busybox:latest
        script: mkdir -p /tekton/run/0/status && ln -s {fifo} /tekton/run/0/status/report.json.tmp
"#,
        fifo = fifo.display()
    );
    let (tr, stderr) = run("podman", &s, &yaml, &[]);
    let _ = std::fs::remove_file(&fifo);
    assert_eq!(reason(&tr), "Succeeded", "{tr:#}\n{stderr}");
}

// ---------------------------------------------------------------- environment and modes

/// Regression: on the process runtime steps inherited `tkt`'s whole
/// environment (a `GITHUB_TOKEN` or `SSH_AUTH_SOCK` of the calling shell).
fn steps_get_only_the_pods_environment(rt: &str) {
    let s = Scratch::new(&format!("env-{rt}"));
    let yaml = r#"apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: env
spec:
  taskSpec:
    results: [{name: seen}]
    steps:
      - name: s
        image: busybox
        env: [{name: DECLARED, value: yes}]
        script: |
          printf '%s,%s,%s,%s' "${GITHUB_TOKEN:-unset}" "${SSH_AUTH_SOCK:-unset}" \
            "$DECLARED" "$(command -v sh >/dev/null && echo path-ok)" > $(results.seen.path)
"#;
    let (tr, stderr) = run(
        rt,
        &s,
        yaml,
        &[
            ("GITHUB_TOKEN", "ghp_secret"),
            ("SSH_AUTH_SOCK", "/tmp/agent"),
        ],
    );
    assert_eq!(reason(&tr), "Succeeded", "{tr:#}\n{stderr}");
    assert_eq!(
        tr["status"]["results"][0]["value"], "unset,unset,yes,path-ok",
        "{tr:#}"
    );
}

#[test]
fn regression_process_steps_inherit_tkts_environment() {
    steps_get_only_the_pods_environment("process");
}

#[test]
fn regression_process_steps_inherit_tkts_environment_rewrite() {
    steps_get_only_the_pods_environment("rewrite");
}

/// The store holds param values and logs: the store and its parts are
/// the user's only (0700), records and logs 0600.
#[test]
fn regression_the_store_is_readable_by_every_user() {
    let s = Scratch::new("modes");
    let yaml = r#"apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: modes
spec:
  taskSpec:
    steps:
      - {name: s, image: busybox, script: echo hello}
"#;
    let (tr, stderr) = run("process", &s, yaml, &[]);
    assert_eq!(reason(&tr), "Succeeded", "{tr:#}\n{stderr}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let state = s.state();
    assert_eq!(mode(&state), 0o700);
    for sub in ["taskruns", "logs", "work"] {
        assert_eq!(mode(&state.join(sub)), 0o700, "{sub}");
    }
    assert_eq!(mode(&state.join("taskruns/modes.json")), 0o600);
    let logs: Vec<PathBuf> = walk(&state.join("logs"));
    assert!(!logs.is_empty());
    for l in logs {
        assert_eq!(mode(&l), 0o600, "{}", l.display());
    }
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The process runtime runs every step as the calling user (its tools,
/// in this user's home, are what steps use): a step's `runAsUser` is not
/// taken, and the banner says so rather than letting it pass unseen.
#[test]
fn regression_process_steps_ignore_run_as_user_silently() {
    let s = Scratch::new("run-as");
    let yaml = r#"apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: run-as
spec:
  taskSpec:
    steps:
      - name: s
        image: busybox
        securityContext: {runAsUser: 1000}
        script: 'true'
"#;
    let (tr, stderr) = run("process", &s, yaml, &[]);
    assert_eq!(reason(&tr), "Succeeded", "{tr:#}\n{stderr}");
    assert!(
        stderr
            .contains("as this user: securityContext's runAsUser and runAsGroup are not honoured"),
        "{stderr}"
    );
}

/// Regression: `--runtime auto` as root fell back to host processes (no
/// isolation at all) with only the banner's runtime line to say so. Here
/// podman is made to fail (a `podman` first on PATH that exits 1).
#[test]
fn regression_auto_falls_back_to_host_processes_as_root_silently() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("not root: no warning is due");
        return;
    }
    let s = Scratch::new("auto-root");
    let bin = s.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("podman"),
        "#!/bin/sh\necho 'no podman here' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(bin.join("podman"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let yaml = "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata:\n  name: auto\nspec:\n  taskSpec:\n    steps:\n      - {name: s, image: busybox, script: 'true'}\n";
    let o = tkt("auto", &s, yaml, &["-o", "json"], &[("PATH", &path)]);
    let stderr = text(&o.stderr);
    assert_eq!(reason(&object(&o)), "Succeeded", "{stderr}");
    assert!(
        stderr.contains("warning: steps run as host processes as root")
            && stderr.contains("--runtime podman to refuse"),
        "{stderr}"
    );
}

/// `--env` hands a step what the user names, and nothing else: a name
/// alone takes tkt's value, `NAME=VALUE` its own; a name tkt does not have
/// or an empty one is refused before anything runs.
#[test]
fn env_flags_pass_only_what_they_name() {
    let s = Scratch::new("env-flag");
    let yaml = r#"apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: env-flag
spec:
  taskSpec:
    results: [{name: seen}]
    steps:
      - name: s
        image: busybox
        env: [{name: OWN, value: pod}]
        script: printf '%s,%s,%s,%s' "$TOKEN" "$EXTRA" "$OWN" "${OTHER:-unset}" > $(results.seen.path)
"#;
    let go = |flags: &[&str]| {
        let args: Vec<&str> = ["-o", "json"].iter().chain(flags).copied().collect();
        tkt(
            "process",
            &s,
            yaml,
            &args,
            &[("TOKEN", "t0k"), ("OTHER", "not-named")],
        )
    };
    let o = go(&["--env", "TOKEN", "--env", "EXTRA=x=y", "--env", "OWN=flag"]);
    let tr = object(&o);
    assert_eq!(reason(&tr), "Succeeded", "{}", text(&o.stderr));
    assert_eq!(tr["status"]["results"][0]["value"], "t0k,x=y,pod,unset");
    let before = s.records("taskruns");
    for (flag, says) in [
        (
            "NOT_SET_ANYWHERE_1",
            "NOT_SET_ANYWHERE_1 is not set in tkt's environment",
        ),
        ("=v", "expected NAME or NAME=VALUE"),
        ("A B=x", "expected NAME or NAME=VALUE"),
    ] {
        let o = go(&["--env", flag]);
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o.stderr).contains(says), "{}", text(&o.stderr));
        assert_eq!(s.records("taskruns"), before, "nothing more is recorded");
    }
}

/// Regression: on podman the run's directories were world-writable (run
/// directories, scripts, the entrypoint's directory, claims 0777) for any
/// user of the machine. Volumes are still 0777 for the containers' users,
/// as a kubelet makes emptyDirs, but only beneath the pod's own directory,
/// which is 0700, in a store that is 0700; the files `tkt` writes there
/// are its own (pod.json 0600).
#[test]
fn regression_run_directories_are_world_writable_podman() {
    if !util::podman_ready() {
        return;
    }
    let s = Scratch::new("modes-podman");
    let yaml = "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata:\n  name: sec-modes\nspec:\n  taskSpec:\n    steps:\n      - {name: s, image: localhost/tektite/busybox:latest, script: 'true'}\n";
    let o = tkt("podman", &s, yaml, &["-o", "json", "--keep"], &[]);
    let _ = std::process::Command::new("podman")
        .args(["pod", "rm", "-f", "sec-modes-pod"])
        .output();
    assert_eq!(reason(&object(&o)), "Succeeded", "{}", text(&o.stderr));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let pod_dir = s
        .state()
        .join("work/taskrun-sec-modes/sec-modes/sec-modes-pod");
    assert_eq!(mode(&s.state()), 0o700);
    assert_eq!(mode(&pod_dir), 0o700, "{}", pod_dir.display());
    assert_eq!(mode(&pod_dir.join("pod.json")), 0o600);
    // Nothing world-writable outside a pod directory.
    for p in walk_dirs(&s.state()) {
        if mode(&p) & 0o002 != 0 {
            assert!(p.starts_with(&pod_dir), "{} is world-writable", p.display());
        }
    }
}

fn walk_dirs(d: &Path) -> Vec<PathBuf> {
    let mut out = vec![d.to_path_buf()];
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_dirs(&e.path()));
        }
    }
    out
}

// ---------------------------------------------------------------- secrets

/// A Secret's value, and its two halves as a step prints them.
const SECRET: &str = "sup3r-s3cret-t0ken";

/// A step that prints a Secret's value (whole, and in two writes a moment
/// apart) and writes it into a result.
fn leaking_task_run(rt: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: api}}
stringData: {{token: {SECRET}}}
---
apiVersion: tekton.dev/v1
kind: TaskRun
metadata: {{name: leak}}
spec:
  taskSpec:
    results: [{{name: out}}]
    steps:
      - name: leak
        image: {}
        env:
          - name: T
            valueFrom: {{secretKeyRef: {{name: api, key: token}}}}
        script: |
          #!/bin/sh
          echo "token=$T"
          printf 'split:sup3r-s3c'; sleep 0.2; printf 'ret-t0ken\n'
          printf '%s' "$T" > $(results.out.path)
"#,
        image(rt)
    )
}

/// A Secret's value printed by a step is `***` on the screen, in `tkt tr
/// logs` and in `-o json`, and is nowhere in the run store: not in a log,
/// a record or a file left behind.
fn secret_values_are_masked_and_never_stored(rt: &str) {
    if rt == "podman" && !util::podman_ready() {
        return;
    }
    let s = Scratch::new(&format!("mask-{rt}"));
    let o = tkt(rt, &s, &leaking_task_run(rt), &["-o", "json"], &[]);
    let v = object(&o);
    let live = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{live}");
    assert!(live.contains("[leak] token=***"), "{live}");
    assert!(live.contains("[leak] split:***"), "{live}");
    assert!(!live.contains(SECRET), "{live}");
    let printed = v.to_string();
    assert!(!printed.contains(SECRET), "{printed}");
    assert_eq!(v["status"]["results"][0]["value"], "***", "{printed}");
    let logs = util::tkt(&["tr", "logs", "leak", "--state-dir", &s.state_arg()]);
    let logs = text(&logs.stdout);
    assert!(
        logs.contains("token=***") && logs.contains("split:***"),
        "{logs}"
    );
    let describe = util::tkt(&["tr", "describe", "leak", "--state-dir", &s.state_arg()]);
    assert!(!text(&describe.stdout).contains(SECRET));
    for f in walk(&s.state()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the Secret's value is in {}",
            f.display()
        );
    }
}

#[test]
fn secret_values_are_masked_and_never_stored_podman() {
    secret_values_are_masked_and_never_stored("podman");
}

#[test]
fn secret_values_are_masked_and_never_stored_process() {
    secret_values_are_masked_and_never_stored("process");
}

#[test]
fn secret_values_are_masked_and_never_stored_rewrite() {
    secret_values_are_masked_and_never_stored("rewrite");
}
