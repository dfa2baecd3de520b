//! The task catalog (`tasks/`): every file validates and follows the
//! authoring rules (pinned images, no Tekton references in script text,
//! shellcheck, yamllint, a README naming every param, result and workspace),
//! and the tasks' own test runs pass through the real `tkt run`.
//!
//! - git-clone and promtool-check run on podman (with the tools image
//!   `hack/images.sh` builds from this machine's git and promtool) and as
//!   host processes;
//! - cargo-test, cargo-build and checkov-scan run on podman (with the Debian
//!   image `hack/image-ci-tools.sh` makes with debootstrap) and as host
//!   processes with this machine's cargo and checkov;
//! - buildah-build runs for real as host processes (Debian's buildah),
//!   pushing to a docker-registry on loopback;
//! - the ci-cd pipeline runs as host processes (its inline steps and the
//!   catalog's defaults name public images, which cannot be pulled here);
//! - tasks whose tools cannot be installed here (trivy, cosign, helm,
//!   kubectl; buildah too, besides the real run) run as host processes against the recording
//!   stand-ins in `tests/catalog/stubs/`, and the commands they ran must equal
//!   `tests/commands.txt` of the task.
//!
//! Each `tests/run-fail-*.yaml` must exit 1 and print the text of its first
//! line (`# expect: TEXT`). Tools come from `hack/setup-catalog-tools.sh`
//! (`hack/test.sh` runs it); a missing tool fails the test and says so.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use util::tkt_path;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn tasks_dir() -> PathBuf {
    root().join("tasks")
}

/// The task and StepAction folders (every folder of `tasks/` but `pipelines`).
fn task_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(tasks_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "pipelines")
        .collect();
    v.sort();
    v
}

/// Every YAML file under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every value under `key` anywhere in `v`.
fn find_all<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    out.push(x);
                }
                find_all(x, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| find_all(x, key, out)),
        _ => {}
    }
}

/// Param name → default, from every `params` list of a document (Task,
/// Pipeline and embedded specs) and every run's param values.
fn param_values(doc: &Value) -> BTreeMap<String, String> {
    let mut lists = Vec::new();
    find_all(doc, "params", &mut lists);
    let mut out = BTreeMap::new();
    for p in lists.iter().filter_map(|l| l.as_array()).flatten() {
        let (Some(name), Some(v)) = (
            p["name"].as_str(),
            p.get("default").or_else(|| p.get("value")),
        ) else {
            continue;
        };
        if let Some(s) = v.as_str() {
            out.entry(name.to_string()).or_insert_with(|| s.to_string());
        }
    }
    out
}

fn pinned(image: &str) -> bool {
    let Some((_, digest)) = image.split_once("@sha256:") else {
        return false;
    };
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Images must be pinned by digest: given literally, or as a param whose
/// default (or given value) is. `localhost/…` test images are not allowed in
/// files: the podman tests pass them with `-p`.
fn check_images(file: &str, doc: &Value, problems: &mut Vec<String>) {
    let params = param_values(doc);
    let mut images = Vec::new();
    find_all(doc, "image", &mut images);
    for img in images.iter().filter_map(|i| i.as_str()) {
        let resolved = match img
            .strip_prefix("$(params.")
            .and_then(|r| r.strip_suffix(')'))
        {
            Some(p) => match params.get(p) {
                Some(v) if v.starts_with("$(params.") => {
                    let inner = &v["$(params.".len()..v.len() - 1];
                    params.get(inner).cloned().unwrap_or_default()
                }
                Some(v) => v.clone(),
                None => String::new(),
            },
            None => img.to_string(),
        };
        if !pinned(&resolved) {
            problems.push(format!(
                "{file}: image {img:?} is not pinned by digest (resolves to {resolved:?}; want repo:tag@sha256:<64 hex>)"
            ));
        }
    }
}

/// Scripts take params, paths and results from `env` only, and pass
/// shellcheck.
fn check_scripts(file: &str, doc: &Value, problems: &mut Vec<String>, scratch: &Path) {
    let mut scripts = Vec::new();
    find_all(doc, "script", &mut scripts);
    for (i, s) in scripts.iter().filter_map(|s| s.as_str()).enumerate() {
        for r in [
            "params",
            "workspaces",
            "results",
            "context",
            "tasks",
            "steps",
        ] {
            if s.contains(&format!("$({r}.")) {
                problems.push(format!(
                    "{file}: script {i} contains a $({r}.…) reference: pass it through env"
                ));
            }
        }
        let shell = match s.lines().next().unwrap_or("") {
            "#!/bin/sh" => "sh",
            "#!/bin/bash" | "#!/usr/bin/env bash" => "bash",
            other => {
                problems.push(format!(
                    "{file}: script {i} starts with {other:?}: want #!/bin/sh (or bash)"
                ));
                continue;
            }
        };
        let path = scratch.join(format!("script-{i}.sh"));
        std::fs::write(&path, s).unwrap();
        let out = Command::new("shellcheck")
            .args(["-s", shell, "-S", "style"])
            .arg(&path)
            .output()
            .expect("shellcheck is not installed: run hack/setup-catalog-tools.sh");
        if !out.status.success() {
            problems.push(format!(
                "{file}: script {i} fails shellcheck:\n{}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
}

#[test]
fn every_catalog_file_validates() {
    let out = Command::new(tkt_path())
        .args(["validate", "-f", "tasks"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tkt validate -f tasks:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn yamllint_is_clean() {
    let out = Command::new("yamllint")
        .args(["--strict", "-c", "tasks/.yamllint", "tasks"])
        .current_dir(root())
        .output()
        .expect("yamllint is not installed: run hack/setup-catalog-tools.sh");
    assert!(
        out.status.success(),
        "yamllint:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn authoring_rules_hold() {
    let scratch = std::env::temp_dir().join(format!("tkt-catalog-lint-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut problems = Vec::new();
    let mut files = yaml_files(&tasks_dir());
    assert!(files.len() > 5, "no catalog files found");
    files.retain(|f| !f.ends_with(".yamllint"));
    for f in &files {
        let rel = f.strip_prefix(root()).unwrap().display().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let docs =
            tektite_api::yaml::parse_values(&text).unwrap_or_else(|e| panic!("{rel}: {e:?}"));
        for doc in &docs {
            check_images(&rel, doc, &mut problems);
            check_scripts(&rel, doc, &mut problems, &scratch);
        }
    }
    // Each task: its Task file, a README naming every param, result and
    // workspace, and a test run.
    for name in task_names() {
        let dir = tasks_dir().join(&name);
        let task = dir.join(format!("{name}.yaml"));
        let Ok(text) = std::fs::read_to_string(&task) else {
            problems.push(format!("tasks/{name}: no {name}.yaml"));
            continue;
        };
        let doc = &tektite_api::yaml::parse_values(&text).unwrap()[0];
        // A folder holds a Task or a StepAction (a step Tasks use by `ref`).
        let kind_ok = doc["kind"] == "Task" || doc["kind"] == "StepAction";
        if !kind_ok || doc["metadata"]["name"] != name.as_str() {
            problems.push(format!(
                "tasks/{name}/{name}.yaml: want a Task or StepAction named {name:?}"
            ));
        }
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap_or_default();
        if readme.is_empty() {
            problems.push(format!("tasks/{name}: no README.md"));
        }
        for list in ["params", "results", "workspaces"] {
            for item in doc["spec"][list].as_array().into_iter().flatten() {
                let n = item["name"].as_str().unwrap_or_default();
                if !readme.contains(&format!("`{n}`")) {
                    problems.push(format!(
                        "tasks/{name}/README.md: does not name {list} entry `{n}`"
                    ));
                }
            }
        }
        if !dir.join("tests/run.yaml").is_file() {
            problems.push(format!("tasks/{name}: no tests/run.yaml"));
        }
    }
    // The stand-ins are shell scripts too.
    for e in std::fs::read_dir(root().join("tests/catalog/stubs")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let out = Command::new("shellcheck")
                .args(["-s", "sh", "-S", "style"])
                .arg(&p)
                .output()
                .unwrap();
            if !out.status.success() {
                problems.push(format!(
                    "{}: fails shellcheck:\n{}",
                    p.display(),
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checkov virtualenv `hack/setup-catalog-tools.sh` makes.
fn tools_path() -> String {
    let tools = std::env::var("TEKTITE_TOOLS").unwrap_or_else(|_| "/opt/tektite-tools".into());
    let checkov = Path::new(&tools).join("checkov/bin");
    assert!(
        checkov.join("checkov").is_file(),
        "checkov is not installed in {}: run hack/setup-catalog-tools.sh",
        checkov.display()
    );
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{}:{path}", checkov.display())
}

fn podman_ready() -> bool {
    podman_has(TOOLS_IMAGE)
}

/// Whether podman tests run here (they fail when they should and cannot):
/// podman and the local `image`.
fn podman_has(image: &str) -> bool {
    if std::env::var_os("TEKTITE_SKIP_PODMAN").is_some_and(|v| v == "1") {
        eprintln!("TEKTITE_SKIP_PODMAN=1: catalog test on podman not run");
        return false;
    }
    let ok = Command::new("podman")
        .args(["image", "exists", image])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "podman or the image {image} is missing: run hack/test.sh \
         (or hack/setup-podman.sh, hack/setup-catalog-tools.sh, hack/images.sh and \
         hack/image-ci-tools.sh), or set TEKTITE_SKIP_PODMAN=1"
    );
    true
}

/// The Debian image `hack/image-ci-tools.sh` builds: cargo, rustc, gcc, git,
/// checkov.
const CI_TOOLS_IMAGE: &str = "localhost/tektite/ci-tools:latest";

/// `task`'s test runs on podman with the ci-tools image (`-p image=… -p
/// shellImage=…`): `tests/run.yaml` passes and prints `line`, and it has
/// `fails` failure cases, which fail as they say.
fn on_ci_tools(task: &str, line: &str, fails: usize) {
    if !podman_has(CI_TOOLS_IMAGE) {
        return;
    }
    let image = format!("image={CI_TOOLS_IMAGE}");
    let shell = format!("shellImage={CI_TOOLS_IMAGE}");
    let args = ["-p", &image, "-p", &shell];
    let r = passes(task, "podman", &args, &[]);
    assert!(r.log.contains(line), "no {line:?} in:\n{}", r.log);
    assert_eq!(failure_cases(task, "podman", &args, &[]), fails);
}

#[test]
fn cargo_test_on_podman() {
    on_ci_tools("cargo-test", "cargo-test: 2 passed, 0 failed, 1 ignored", 1);
}

#[test]
fn cargo_build_on_podman() {
    on_ci_tools("cargo-build", "ok: hello/target/release/hello sha256:", 0);
}

#[test]
fn checkov_scan_on_podman() {
    on_ci_tools("checkov-scan", "ok: counts 2 0 0 2", 1);
}

/// A finished `tkt run`: exit code, the run as JSON (when it printed one),
/// and everything it printed on stderr (progress and step logs).
struct Run {
    code: i32,
    json: Value,
    log: String,
}

fn tkt_run(runtime: &str, file: &str, extra: &[&str], env: &[(&str, String)]) -> Run {
    // A store per call: the same file runs on two runtimes at once.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let state = std::env::temp_dir().join(format!(
        "tkt-catalog-{}-{runtime}-{}-{}",
        file.replace('/', "_"),
        std::process::id(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&state);
    let mut cmd = Command::new(tkt_path());
    cmd.args(["run", "--runtime", runtime, "-o", "json", "-f", file])
        .arg("--state-dir")
        .arg(&state)
        .args(extra)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env("TEKTITE_PROCESS_REWRITE", "0")
        .stdin(Stdio::null());
    let ep = root().join("target/debug/entrypoint");
    if ep.is_file() {
        cmd.env("TEKTITE_ENTRYPOINT", ep);
    }
    for (k, v) in env {
        cmd.env(k, v);
        // Steps get only what the pod defines and what --env names (PATH
        // is always theirs).
        if *k != "PATH" {
            cmd.args(["--env", k]);
        }
    }
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_dir_all(&state);
    Run {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `Succeeded` condition's status and reason.
fn condition(v: &Value) -> (String, String) {
    let c = v["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Succeeded");
    let field = |k: &str| {
        c.and_then(|c| c[k].as_str())
            .unwrap_or_default()
            .to_string()
    };
    (field("status"), field("reason"))
}

/// `tests/run.yaml` of `task` succeeds, nothing is skipped and its check
/// task reported `ok:` lines and no failure.
fn passes(task: &str, runtime: &str, extra: &[&str], env: &[(&str, String)]) -> Run {
    let file = format!("tasks/{task}/tests/run.yaml");
    let r = tkt_run(runtime, &file, extra, env);
    assert_eq!(r.code, 0, "{file} on {runtime}:\n{}", r.log);
    assert_eq!(condition(&r.json).1, "Succeeded", "{}", r.log);
    assert!(
        r.json["status"]["skippedTasks"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "skipped tasks: {}",
        r.json["status"]["skippedTasks"]
    );
    assert!(
        r.log.contains("verify] ok:"),
        "the check task said nothing:\n{}",
        r.log
    );
    assert!(!r.log.contains("FAIL:"), "{}", r.log);
    r
}

/// Every `tests/run-fail-*.yaml` of `task` exits 1 and prints its `# expect:`.
fn failure_cases(task: &str, runtime: &str, extra: &[&str], env: &[(&str, String)]) -> usize {
    let dir = tasks_dir().join(task).join("tests");
    let mut n = 0;
    for f in yaml_files(&dir) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("run-fail-") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name}: first line must be `# expect: TEXT`"));
        let file = format!("tasks/{task}/tests/{name}");
        let r = tkt_run(runtime, &file, extra, env);
        assert_eq!(r.code, 1, "{file} must fail (exit 1):\n{}", r.log);
        assert_eq!(condition(&r.json).0, "False", "{}", r.log);
        assert!(
            r.log.contains(expect),
            "{file}: no {expect:?} in:\n{}",
            r.log
        );
        n += 1;
    }
    n
}

/// git refuses file:// URLs in submodules by default; the test's local
/// repositories are trusted (the tools image sets the same in /etc/gitconfig).
fn git_env() -> Vec<(&'static str, String)> {
    vec![
        ("GIT_CONFIG_COUNT", "1".into()),
        ("GIT_CONFIG_KEY_0", "protocol.file.allow".into()),
        ("GIT_CONFIG_VALUE_0", "always".into()),
    ]
}

const TOOLS_IMAGE: &str = "localhost/tektite/tools:latest";

#[test]
fn git_clone_on_podman() {
    if podman_ready() {
        passes(
            "git-clone",
            "podman",
            &["-p", &format!("gitImage={TOOLS_IMAGE}")],
            &[],
        );
    }
}

#[test]
fn git_clone_as_processes() {
    let r = passes("git-clone", "process", &[], &git_env());
    for line in [
        "ok: default branch commit result",
        "ok: depth 1 is shallow",
        "ok: submodule checked out",
        "ok: depth 0 has the full history",
        "ok: commit SHA checkout",
    ] {
        assert!(r.log.contains(line), "no {line:?}:\n{}", r.log);
    }
}

#[test]
fn git_checkout_step_action_on_podman() {
    if podman_ready() {
        let git = format!("gitImage={TOOLS_IMAGE}");
        let args = ["-p", git.as_str()];
        let r = passes("git-checkout", "podman", &args, &[]);
        assert!(
            r.log
                .contains("[verify] ok: commit result is the branch's head"),
            "{}",
            r.log
        );
        assert_eq!(failure_cases("git-checkout", "podman", &args, &[]), 1);
    }
}

#[test]
fn git_checkout_step_action_as_processes() {
    let r = passes("git-checkout", "process", &[], &[]);
    for line in [
        "[verify] ok: commit result names the checkout's HEAD",
        "[verify] ok: commit result is the branch's head",
        "[verify] ok: committer-date result",
    ] {
        assert!(r.log.contains(line), "no {line:?}:\n{}", r.log);
    }
    // The Task's result is the step's.
    let commit = result_of(&r.json, "commit");
    assert_eq!(commit, result_of(&r.json, "head"), "{}", r.json["status"]);
    assert_eq!(failure_cases("git-checkout", "process", &[], &[]), 1);
}

#[test]
fn file_digest_step_action_on_podman() {
    let image = "localhost/tektite/busybox:latest";
    if podman_has(image) {
        let shell = format!("shellImage={image}");
        let args = ["-p", shell.as_str()];
        let r = passes("file-digest", "podman", &args, &[]);
        assert!(r.log.contains("[verify] ok: digest"), "{}", r.log);
        assert_eq!(failure_cases("file-digest", "podman", &args, &[]), 1);
    }
}

#[test]
fn file_digest_step_action_as_processes() {
    let r = passes("file-digest", "process", &[], &[]);
    for line in ["[verify] ok: digest", "[verify] ok: no file: empty digest"] {
        assert!(r.log.contains(line), "no {line:?}:\n{}", r.log);
    }
    assert_eq!(
        result_of(&r.json, "digest"),
        "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    );
    // No file: an empty result, there all the same.
    let none = &r.json["status"]["results"];
    assert!(
        none.as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == "none" && x["value"] == "")),
        "{none}"
    );
    assert_eq!(failure_cases("file-digest", "process", &[], &[]), 1);
}

#[test]
fn promtool_check_on_podman() {
    if podman_ready() {
        passes(
            "promtool-check",
            "podman",
            &["-p", &format!("image={TOOLS_IMAGE}")],
            &[],
        );
    }
}

#[test]
fn promtool_check_as_processes() {
    let r = passes("promtool-check", "process", &[], &[]);
    assert!(r.log.contains("ok: rules/tests 2 1"), "{}", r.log);
    assert_eq!(failure_cases("promtool-check", "process", &[], &[]), 1);
}

#[test]
fn cargo_test_as_processes() {
    let r = passes("cargo-test", "process", &[], &[]);
    assert!(
        r.log.contains("cargo-test: 2 passed, 0 failed, 1 ignored"),
        "{}",
        r.log
    );
    assert_eq!(failure_cases("cargo-test", "process", &[], &[]), 1);
}

#[test]
fn cargo_build_as_processes() {
    let r = passes("cargo-build", "process", &[], &[]);
    assert!(
        r.log.contains("ok: hello/target/release/hello sha256:"),
        "{}",
        r.log
    );
}

#[test]
fn checkov_scan_as_processes() {
    let env = [("PATH", tools_path())];
    let r = passes("checkov-scan", "process", &[], &env);
    assert!(r.log.contains("ok: counts 2 0 0 2"), "{}", r.log);
    assert_eq!(failure_cases("checkov-scan", "process", &[], &env), 1);
}

/// Host processes with the recording stand-ins first on PATH: `tests/run.yaml`
/// passes and runs exactly the commands of `tests/commands.txt` (sorted: tasks
/// run in parallel), and every failure case fails as it says.
fn with_stubs(task: &str) {
    let log = std::env::temp_dir().join(format!("tkt-stub-{task}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let stubs = root().join("tests/catalog/stubs");
    let env = [
        (
            "PATH",
            format!(
                "{}:{}",
                stubs.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        ),
        ("TEKTITE_STUB_LOG", log.display().to_string()),
    ];
    passes(task, "process", &[], &env);
    let sorted = |text: &str| {
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let got = sorted(&std::fs::read_to_string(&log).unwrap_or_default());
    let want_file = tasks_dir().join(task).join("tests/commands.txt");
    let want = sorted(&std::fs::read_to_string(&want_file).unwrap());
    assert!(!want.is_empty(), "{}: empty", want_file.display());
    assert_eq!(
        got,
        want,
        "{task}: the commands run (left) differ from {}",
        want_file.display()
    );
    let _ = std::fs::remove_file(&log);
    assert!(
        failure_cases(task, "process", &[], &env) > 0,
        "{task}: no failure case"
    );
}

#[test]
fn trivy_scan_with_stubs() {
    with_stubs("trivy-scan");
}

#[test]
fn buildah_build_with_stubs() {
    with_stubs("buildah-build");
}

#[test]
fn cosign_sign_with_stubs() {
    with_stubs("cosign-sign");
}

#[test]
fn cosign_verify_with_stubs() {
    with_stubs("cosign-verify");
}

#[test]
fn helm_lint_with_stubs() {
    with_stubs("helm-lint");
}

#[test]
fn helm_upgrade_with_stubs() {
    with_stubs("helm-upgrade");
}

#[test]
fn kubectl_apply_with_stubs() {
    with_stubs("kubectl-apply");
}

/// The sample application (`tests/catalog/sample-app`) as a git repository
/// in a directory of its own: its URL and its commit.
fn sample_repo(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("tkt-sample-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let copy = Command::new("cp")
        .arg("-r")
        .arg(root().join("tests/catalog/sample-app"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(copy.success());
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(&dir)
            .env("GIT_AUTHOR_NAME", "test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "--quiet", "--initial-branch=main"]);
    git(&["add", "-A"]);
    git(&["commit", "--quiet", "-m", "sample app"]);
    let commit = git(&["rev-parse", "HEAD"]);
    (dir, commit)
}

const CI_CD: &str = "tasks/pipelines/tests/run.yaml";

fn skipped(v: &Value) -> Vec<(String, String)> {
    v["status"]["skippedTasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn result_of(v: &Value, name: &str) -> String {
    v["status"]["results"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == name)
        .and_then(|r| r["value"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// With this machine's tools only (git, cargo, checkov) and no image
/// repository: clone, test and the IaC scan run for real, every later stage
/// is skipped by its when expressions, and the preflight says why.
#[test]
fn ci_cd_pipeline_clone_test_scan_with_local_tools() {
    let (repo, commit) = sample_repo("local");
    let url = format!("repo-url=file://{}", repo.display());
    let r = tkt_run("process", CI_CD, &["-p", &url], &[("PATH", tools_path())]);
    let committed = std::process::Command::new("git")
        .args(["-C", &repo.to_string_lossy(), "log", "-1", "--format=%ct"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&repo);
    assert_eq!(r.code, 0, "{}", r.log);
    // The commit's time, for the change's lead time.
    let committed = String::from_utf8_lossy(&committed.stdout)
        .trim()
        .to_string();
    assert!(!committed.is_empty());
    assert_eq!(result_of(&r.json, "commit-time"), committed);
    // A deployment to the environment its param names (dev by default).
    assert_eq!(
        r.json["metadata"]["labels"]["tektite.dev/environment"], "dev",
        "{}",
        r.json
    );
    // Tekton's reason when some tasks were skipped.
    assert_eq!(
        condition(&r.json),
        ("True".into(), "Completed".into()),
        "{}",
        r.log
    );
    let when = "When Expressions evaluated to false".to_string();
    let want: Vec<(String, String)> = [
        "build",
        "image-scan",
        "sign",
        "deploy-dev",
        "deploy-stage",
        "deploy-prod",
    ]
    .iter()
    .map(|t| (t.to_string(), when.clone()))
    .collect();
    let mut got = skipped(&r.json);
    got.sort();
    let mut want_sorted = want;
    want_sorted.sort();
    assert_eq!(got, want_sorted, "{}", r.log);
    assert_eq!(result_of(&r.json, "commit"), commit);
    // Left out: it names results of the skipped build.
    assert_eq!(result_of(&r.json, "image"), "");
    for line in [
        "ci-cd: stage build: skipped: no image-repo param",
        "ci-cd: stage deploy to dev: skipped: the image build is skipped",
        "cargo-test: 1 passed, 0 failed, 0 ignored",
        "[report : print] ci-cd (dev): Completed",
        "[report : print]   iac-scan       Succeeded",
        "[report : print]   build          None (skipped)",
    ] {
        assert!(r.log.contains(line), "no {line:?} in:\n{}", r.log);
    }
    assert!(
        r.log.contains(" failed, 0 skipped")
            && r.log.contains("checkov-scan: ")
            && !r.log.contains("checkov-scan: 0 passed"),
        "{}",
        r.log
    );
}

/// The pipeline over a new copy of the sample application, with the
/// stand-ins for buildah, trivy, cosign and helm first on PATH, a kubeconfig
/// workspace and `extra` arguments: the run, the commit and the commands the
/// stand-ins recorded.
/// A PATH of its own: every command of `/usr/bin` and `/bin` but `left_out`
/// (links in a temporary folder), so a test does not depend on where this
/// machine keeps its tools.
fn path_without(name: &str, left_out: &[&str]) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("tkt-path-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for from in ["/usr/bin", "/bin"] {
        for e in std::fs::read_dir(from).into_iter().flatten().flatten() {
            let n = e.file_name();
            if left_out.iter().any(|l| n == *l) {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), dir.join(&n));
        }
    }
    let path = dir.display().to_string();
    (dir, path)
}

/// Regression: with no checkov on PATH, the iac-scan stage ran and failed
/// the pipeline (`checkov: not found`, exit 127), where the preflight skips
/// a stage whose tool is missing; cargo was not checked either.
#[test]
fn regression_iac_scan_ran_without_checkov_and_failed_the_pipeline() {
    let (repo, commit) = sample_repo("no-tools");
    let url = format!("repo-url=file://{}", repo.display());
    let (bin, path) = path_without("no-tools", &["cargo", "checkov"]);
    let r = tkt_run("process", CI_CD, &["-p", &url], &[("PATH", path)]);
    let _ = std::fs::remove_dir_all(&repo);
    let _ = std::fs::remove_dir_all(&bin);
    assert_eq!(r.code, 0, "{}", r.log);
    assert_eq!(
        condition(&r.json),
        ("True".into(), "Completed".into()),
        "{}",
        r.log
    );
    let skipped = skipped(&r.json);
    for t in ["test", "iac-scan"] {
        assert!(
            skipped.contains(&(t.into(), "When Expressions evaluated to false".into())),
            "{t} not skipped: {skipped:?}"
        );
    }
    assert_eq!(result_of(&r.json, "commit"), commit);
    for line in [
        "ci-cd: stage test: skipped: cargo not found on PATH (install it: apt-get install cargo, or rustup from https://rustup.rs)",
        "ci-cd: stage iac-scan: skipped: checkov not found on PATH (install it: pip install checkov)",
        "[report : print] skipped for a tool not on PATH:",
        "[report : print]   iac-scan: checkov not found on PATH (install it: pip install checkov)",
        "[report : print]   test           None (skipped)",
    ] {
        assert!(r.log.contains(line), "no {line:?} in:\n{}", r.log);
    }
    assert!(!r.log.contains("not found (exit"), "{}", r.log);
}

fn ci_cd_with_stubs(name: &str, image_repo: &str, extra: &[&str]) -> (Run, String, String) {
    let (repo, commit) = sample_repo(name);
    let dir = std::env::temp_dir().join(format!("tkt-ci-cd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("key")).unwrap();
    std::fs::create_dir_all(dir.join("kube")).unwrap();
    std::fs::write(dir.join("key/cosign.key"), "test key\n").unwrap();
    std::fs::write(
        dir.join("kube/kubeconfig"),
        "apiVersion: v1\nkind: Config\n",
    )
    .unwrap();
    let log = dir.join("stub.log");
    let stubs = root().join("tests/catalog/stubs");
    let env = [
        ("PATH", format!("{}:{}", stubs.display(), tools_path())),
        ("TEKTITE_STUB_LOG", log.display().to_string()),
    ];
    let url = format!("repo-url=file://{}", repo.display());
    let image = format!("image-repo={image_repo}");
    let kube = format!("kubeconfig={}", dir.join("kube").display());
    let mut args = vec!["-p", &url, "-p", &image, "-w", &kube];
    args.extend_from_slice(extra);
    let r = tkt_run("process", CI_CD, &args, &env);
    let commands = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&repo);
    let _ = std::fs::remove_dir_all(&dir);
    (r, commit, commands)
}

/// The whole path to a dev deploy, through the stand-ins: each stage gets
/// the previous stages' results (the image by digest, the commit).
#[test]
fn ci_cd_pipeline_whole_path_to_dev_with_stubs() {
    let key = std::env::temp_dir().join(format!("tkt-ci-cd-key-{}", std::process::id()));
    std::fs::create_dir_all(&key).unwrap();
    std::fs::write(key.join("cosign.key"), "test key\n").unwrap();
    let key_arg = format!("cosign-key={}", key.display());
    let (r, commit, commands) =
        ci_cd_with_stubs("dev", "registry.example/team/clean-app", &["-w", &key_arg]);
    let _ = std::fs::remove_dir_all(&key);
    assert_eq!(r.code, 0, "{}", r.log);
    let mut got = skipped(&r.json);
    got.sort();
    let when = "When Expressions evaluated to false".to_string();
    assert_eq!(
        got,
        vec![
            ("deploy-prod".to_string(), when.clone()),
            ("deploy-stage".to_string(), when)
        ],
        "{}",
        r.log
    );
    let image = result_of(&r.json, "image");
    let prefix = format!("registry.example/team/clean-app:{commit}@sha256:");
    assert!(image.starts_with(&prefix), "image result {image:?}");
    let digest = &image[image.find("@").unwrap() + 1..];
    for want in [
        format!("-t registry.example/team/clean-app:{commit} /workspace/source/src"),
        format!(
            "trivy image --cache-dir /var/run/trivy-scan/cache --format cyclonedx --output /workspace/sbom/sbom.cdx.json {image}"
        ),
        format!(
            "cosign sign --yes --key=/workspace/signing-key/cosign.key --tlog-upload=true --annotations=commit={commit} {image}"
        ),
        format!(
            "helm upgrade sample-app /workspace/source/src/deploy/chart --install --atomic --wait --timeout 5m0s --namespace apps --values /workspace/source/src/deploy/chart/values-dev.yaml --set image.repository=registry.example/team/clean-app --set image.digest={digest}"
        ),
    ] {
        assert!(
            commands.lines().any(|l| l.contains(&want)),
            "no command with {want:?} in:\n{commands}"
        );
    }
    assert!(
        r.log
            .contains("[report : print]   deploy-dev     Succeeded"),
        "{}",
        r.log
    );
}

/// prod takes signed images only: without a signing key, sign and the prod
/// deploy are skipped and helm never runs.
#[test]
fn ci_cd_pipeline_prod_needs_a_signature() {
    let (r, _, commands) = ci_cd_with_stubs(
        "prod",
        "registry.example/team/clean-app",
        &["-p", "environment=prod"],
    );
    assert_eq!(r.code, 0, "{}", r.log);
    let names: Vec<String> = skipped(&r.json).into_iter().map(|s| s.0).collect();
    for t in ["sign", "deploy-dev", "deploy-stage", "deploy-prod"] {
        assert!(names.iter().any(|n| n == t), "{t} not skipped: {names:?}");
    }
    assert!(
        r.log
            .contains("ci-cd: stage sign: skipped: no cosign-key workspace"),
        "{}",
        r.log
    );
    assert!(
        r.log
            .contains("ci-cd: stage deploy to prod: skipped: prod takes signed images only"),
        "{}",
        r.log
    );
    assert!(commands.contains("buildah"), "{commands}");
    assert!(
        !commands.contains("helm ") && !commands.contains("cosign "),
        "{commands}"
    );
}

/// An image with a CRITICAL vulnerability stops the pipeline at the image
/// scan: nothing is signed or deployed, and the report says so.
#[test]
fn ci_cd_pipeline_stops_at_a_vulnerable_image() {
    let key = std::env::temp_dir().join(format!("tkt-ci-cd-vkey-{}", std::process::id()));
    std::fs::create_dir_all(&key).unwrap();
    std::fs::write(key.join("cosign.key"), "test key\n").unwrap();
    let key_arg = format!("cosign-key={}", key.display());
    let (r, _, commands) = ci_cd_with_stubs(
        "vulnerable",
        "registry.example/team/vulnerable-app",
        &["-w", &key_arg],
    );
    let _ = std::fs::remove_dir_all(&key);
    assert_eq!(r.code, 1, "{}", r.log);
    assert_eq!(condition(&r.json).0, "False", "{}", r.log);
    assert!(
        r.log.contains("[report : print]   image-scan     Failed"),
        "{}",
        r.log
    );
    assert!(
        r.log
            .contains("[report : print]   deploy-dev     None (skipped)"),
        "{}",
        r.log
    );
    assert!(
        !commands.contains("helm ") && !commands.contains("cosign "),
        "{commands}"
    );
}

/// A `docker-registry serve` on a free loopback port, stopped on drop.
struct Registry {
    child: std::process::Child,
    dir: PathBuf,
    host: String,
}

impl Registry {
    fn start() -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let dir = std::env::temp_dir().join(format!("tkt-catalog-registry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is not installed: run hack/setup-catalog-tools.sh");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not listen on {host}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Registry { child, dir, host }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// buildah-build for real: this machine's buildah, on host processes (in
/// the run's own empty image storage), pulls its base image from a registry
/// on loopback, builds and pushes; the digest it reports is the one the
/// registry serves.
#[test]
fn buildah_build_pushes_to_a_local_registry() {
    if !podman_ready() {
        return; // the base image is the local busybox image
    }
    let reg = Registry::start();
    let base = format!("{}/base/busybox:latest", reg.host);
    let push = Command::new("podman")
        .args([
            "push",
            "--quiet",
            "--tls-verify=false",
            "localhost/tektite/busybox:latest",
        ])
        .arg(format!("docker://{base}"))
        .output()
        .unwrap();
    assert!(push.status.success(), "podman push: {push:?}");
    let registry = format!("registry={}", reg.host);
    let base_arg = format!("base={base}");
    let r = tkt_run(
        "process",
        "tasks/buildah-build/tests/run-local-registry.yaml",
        &["-p", &registry, "-p", &base_arg],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.log);
    let prefix = format!(
        "[check : verify] ok: pushed {}/catalog/hello:test@",
        reg.host
    );
    let digest = r
        .log
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{}", r.log))
        .trim()
        .to_string();
    let head = Command::new("curl")
        .args([
            "-sfI",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ])
        .arg(format!(
            "http://{}/v2/catalog/hello/manifests/test",
            reg.host
        ))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&head.stdout).to_lowercase();
    assert!(
        headers.contains(&format!("docker-content-digest: {digest}")),
        "the registry serves another digest than {digest}:\n{headers}"
    );
}
