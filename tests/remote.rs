//! `tkt run` with remote Tasks, Pipelines and StepActions, against real
//! servers on loopback: a repository served by `git daemon` and by
//! `file://`, Python's `http.server`, and Debian's `docker-registry` filled
//! by `tkt bundle push`. A PipelineRun whose Pipeline comes over http, one
//! task from git, one from a bundle and a StepAction from git runs on both
//! runtimes with its provenance recorded; what cannot be resolved stops the
//! run before anything starts (exit 2), naming the source.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod util;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{Scratch, object, reason, text, tkt, tkt_run};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server started in a process group of its own, which is killed whole
/// on drop: `git daemon` runs `git-daemon` as a child, which outlived the
/// `git` that was killed and kept serving after the tests.
struct Server(Child);

impl Server {
    fn start(cmd: &mut Command) -> std::io::Result<Server> {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0).spawn().map(Server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

const STEP_ACTION: &str = "apiVersion: tekton.dev/v1beta1\nkind: StepAction\nmetadata:\n  name: greet\nspec:\n  params:\n    - name: who\n  image: localhost/tektite/busybox:latest\n  env:\n    - {name: WHO, value: $(params.who)}\n  script: |\n    echo \"hello $WHO from a StepAction fetched by git\"\n";

const BUNDLED: &str = "apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: from-bundle\nspec:\n  params:\n    - {name: greeting, default: hello}\n  steps:\n    - name: say\n      image: localhost/tektite/busybox:latest\n      script: echo \"$(params.greeting) from a bundle\"\n";

/// Everything a remote run needs, on loopback: a git repository (`task.yaml`
/// using `stepaction.yaml` through git; `broken.yaml`, a Task with an
/// unknown field), its `git daemon`, an HTTP server with `pipeline.yaml`,
/// and a registry holding the bundle `demo/tasks:v1`.
struct Sources {
    s: Scratch,
    _daemon: Server,
    _web: Server,
    _registry: Option<Server>,
    git_url: String,
    web: String,
    bundle: String,
}

impl Sources {
    fn start(name: &str, registry: bool) -> Sources {
        let s = Scratch::new(name);
        let repo = s.0.join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "--quiet", "--initial-branch=main"]);
        let daemon_port = free_port();
        let git_url = format!("git://127.0.0.1:{daemon_port}/repo");
        std::fs::write(
            repo.join("task.yaml"),
            format!(
                "apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: from-git\nspec:\n  params:\n    - name: who\n  steps:\n    - name: greet\n      ref:\n        resolver: git\n        params:\n          - {{name: url, value: \"{git_url}\"}}\n          - {{name: pathInRepo, value: stepaction.yaml}}\n      params:\n        - {{name: who, value: $(params.who)}}\n"
            ),
        )
        .unwrap();
        std::fs::write(repo.join("stepaction.yaml"), STEP_ACTION).unwrap();
        std::fs::write(
            repo.join("broken.yaml"),
            "apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: broken\nspec:\n  steps:\n    - name: s\n      image: busybox\n      scirpt: echo\n",
        )
        .unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "--quiet", "-m", "tasks"]);
        let daemon = Server::start(
            Command::new("git")
                .args([
                    "daemon",
                    "--export-all",
                    "--reuseaddr",
                    "--listen=127.0.0.1",
                ])
                .arg(format!("--port={daemon_port}"))
                .arg(format!("--base-path={}", s.0.display()))
                .arg(&s.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
        wait_listening(daemon_port, "git daemon");

        let webdir = s.0.join("web");
        std::fs::create_dir_all(&webdir).unwrap();
        std::fs::write(
            webdir.join("pipeline.yaml"),
            "apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata:\n  name: from-http\nspec:\n  params:\n    - name: repo\n    - name: bundle\n  tasks:\n    - name: git-task\n      taskRef:\n        resolver: git\n        params:\n          - {name: url, value: $(params.repo)}\n          - {name: revision, value: main}\n          - {name: pathInRepo, value: task.yaml}\n      params:\n        - {name: who, value: Ada}\n    - name: bundle-task\n      runAfter: [git-task]\n      taskRef:\n        resolver: bundles\n        params:\n          - {name: bundle, value: $(params.bundle)}\n          - {name: name, value: from-bundle}\n          - {name: kind, value: task}\n",
        )
        .unwrap();
        std::fs::write(webdir.join("task.yaml"), BUNDLED).unwrap();
        let web_port = free_port();
        let web = Server::start(
            Command::new("python3")
                .args(["-m", "http.server", "--bind", "127.0.0.1", "-d"])
                .arg(&webdir)
                .arg(web_port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
        wait_listening(web_port, "python3 -m http.server");

        let reg_port = free_port();
        let bundle = format!("127.0.0.1:{reg_port}/demo/tasks:v1");
        let registry = registry.then(|| {
            let cfg = s.file(
                "registry.yml",
                &format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{reg_port}\n",
                    s.0.join("store").display()
                ),
            );
            let r = Server::start(
                Command::new("docker-registry")
                    .args(["serve", &cfg])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .expect("docker-registry is missing: apt-get install docker-registry");
            wait_listening(reg_port, "docker-registry");
            // From standard input, as every `-f` takes it.
            let out = util::tkt_stdin(&["bundle", "push", &bundle, "-f", "-"], Some(BUNDLED));
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            r
        });
        Sources {
            s,
            _daemon: daemon,
            _web: web,
            _registry: registry,
            git_url,
            web: format!("http://127.0.0.1:{web_port}"),
            bundle,
        }
    }

    /// The PipelineRun of the remote pipeline.
    fn run_file(&self) -> String {
        self.s.file(
            "run.yaml",
            &format!(
                "apiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata:\n  generateName: remote-\nspec:\n  params:\n    - {{name: repo, value: \"{}\"}}\n    - {{name: bundle, value: \"{}\"}}\n  pipelineRef:\n    resolver: http\n    params:\n      - {{name: url, value: \"{}/pipeline.yaml\"}}\n",
                self.git_url, self.bundle, self.web
            ),
        )
    }

    /// `tkt run` of `file` on `rt` with this store; exit code, JSON, stderr.
    fn run(&self, rt: &str, file: &str, extra: &[&str]) -> (i32, Value, String) {
        let out = tkt_run(rt)
            .args(["-f", file, "--state-dir", &self.s.state_arg(), "-o", "json"])
            .args(extra)
            .output()
            .unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), v, text(&out.stderr))
    }
}

fn registry_ready() -> bool {
    if std::env::var_os("TEKTITE_SKIP_PODMAN").is_some_and(|v| v == "1") {
        eprintln!("TEKTITE_SKIP_PODMAN=1: the registry test is not run");
        return false;
    }
    true
}

fn a_remote_pipeline_with_tasks_from_git_and_a_bundle_runs(rt: &str) {
    if !registry_ready() || (rt == "podman" && !util::podman_ready()) {
        return;
    }
    let src = Sources::start(&format!("remote-{rt}"), true);
    let (code, v, stderr) = src.run(rt, &src.run_file(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reason(&v), "Succeeded", "{stderr}");
    assert!(
        stderr.contains("[git-task : greet] hello Ada from a StepAction fetched by git"),
        "{stderr}"
    );
    assert!(
        stderr.contains("[bundle-task : say] hello from a bundle"),
        "{stderr}"
    );
    // Where the Pipeline came from, and each Task.
    let source = &v["status"]["provenance"]["refSource"];
    assert_eq!(source["uri"], format!("{}/pipeline.yaml", src.web));
    assert_eq!(source["digest"]["sha256"].as_str().unwrap().len(), 64);
    let describe = |tr: &str| {
        let out = tkt(&[
            "tr",
            "describe",
            tr,
            "--state-dir",
            &src.s.state_arg(),
            "-o",
            "json",
        ]);
        object(&out)["status"]["provenance"]["refSource"].clone()
    };
    let name = v["metadata"]["name"].as_str().unwrap();
    let from_git = describe(&format!("{name}-git-task"));
    assert_eq!(from_git["uri"], format!("git+{}", src.git_url));
    assert_eq!(from_git["entryPoint"], "task.yaml");
    assert_eq!(from_git["digest"]["sha1"].as_str().unwrap().len(), 40);
    let from_bundle = describe(&format!("{name}-bundle-task"));
    assert_eq!(from_bundle["uri"], src.bundle.trim_end_matches(":v1"));
    assert_eq!(from_bundle["entryPoint"], "from-bundle");
    // `tkt pr describe` says where each came from.
    let out = tkt(&["pr", "describe", name, "--state-dir", &src.s.state_arg()]);
    let page = text(&out.stdout);
    assert!(
        page.contains(&format!("{}/pipeline.yaml", src.web)),
        "{page}"
    );
    assert!(
        page.contains(&format!("git+{}@", src.git_url)) && page.contains(":task.yaml"),
        "{page}"
    );
}

#[test]
fn a_remote_pipeline_with_tasks_from_git_and_a_bundle_runs_on_podman() {
    a_remote_pipeline_with_tasks_from_git_and_a_bundle_runs("podman");
}

#[test]
fn a_remote_pipeline_with_tasks_from_git_and_a_bundle_runs_as_processes() {
    a_remote_pipeline_with_tasks_from_git_and_a_bundle_runs("process");
}

#[test]
fn what_cannot_be_resolved_stops_the_run_before_it_starts_naming_the_source() {
    let src = Sources::start("remote-failures", false);
    let task_run = |params: &str| {
        src.s.file(
            "tr.yaml",
            &format!(
                "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata:\n  generateName: r-\nspec:\n  params:\n    - {{name: who, value: Bo}}\n  taskRef:\n    resolver: git\n    params:\n{params}"
            ),
        )
    };
    let url = &src.git_url;
    let cases = [
        (
            format!(
                "      - {{name: url, value: \"{url}\"}}\n      - {{name: revision, value: nope}}\n      - {{name: pathInRepo, value: task.yaml}}\n"
            ),
            vec![
                "spec.taskRef: error requesting remote resource: git resolver: git fetch error:"
                    .to_string(),
                "nope".into(),
            ],
        ),
        (
            format!(
                "      - {{name: url, value: \"{url}\"}}\n      - {{name: pathInRepo, value: missing.yaml}}\n"
            ),
            vec!["error opening file \"missing.yaml\": file does not exist".to_string()],
        ),
        (
            format!(
                "      - {{name: url, value: \"{url}\"}}\n      - {{name: pathInRepo, value: stepaction.yaml}}\n"
            ),
            vec![
                format!("git+{url}@"),
                ":stepaction.yaml: resource is not a task: it is a StepAction".into(),
            ],
        ),
        (
            format!(
                "      - {{name: url, value: \"{url}\"}}\n      - {{name: pathInRepo, value: broken.yaml}}\n"
            ),
            vec![
                format!("git+{url}@"),
                ":broken.yaml".into(),
                "spec.steps[0]".into(),
                "scirpt".into(),
            ],
        ),
        (
            format!(
                "      - {{name: url, value: \"git://127.0.0.1:{}/none\"}}\n      - {{name: pathInRepo, value: task.yaml}}\n",
                free_port()
            ),
            vec!["git fetch error:".to_string(), "127.0.0.1".into()],
        ),
        (
            format!(
                "      - {{name: url, value: \"{url}\"}}\n      - {{name: pathInRepo, value: $(context.taskRun.uid)}}\n"
            ),
            vec!["a resolver's params may use the run's params only".to_string()],
        ),
    ];
    for (params, want) in cases {
        let file = task_run(&params);
        let (code, v, stderr) = src.run("process", &file, &[]);
        assert_eq!(code, 2, "{params}: {stderr}");
        assert_eq!(v, Value::Null, "nothing printed as a run");
        for w in want {
            assert!(stderr.contains(&w), "{params}: no {w:?} in {stderr}");
        }
        assert!(
            stderr.contains("nothing was run") || stderr.contains("r-*"),
            "{stderr}"
        );
        assert!(src.s.records("taskruns").is_empty(), "nothing recorded");
    }
    // The pipeline's own ref: an http answer that is not a Pipeline.
    let pr = src.s.file(
        "pr.yaml",
        &format!(
            "apiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata:\n  generateName: p-\nspec:\n  pipelineRef:\n    resolver: http\n    params:\n      - {{name: url, value: \"{}/task.yaml\"}}\n",
            src.web
        ),
    );
    let (code, _, stderr) = src.run("process", &pr, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("resource is not a pipeline: it is a Task"),
        "{stderr}"
    );
}

#[test]
fn offline_runs_answer_from_the_cache_and_refuse_what_it_lacks() {
    let src = Sources::start("remote-offline", false);
    let file = src.s.file(
        "tr.yaml",
        &format!(
            "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata:\n  generateName: o-\nspec:\n  params:\n    - {{name: who, value: Cy}}\n  taskRef:\n    resolver: git\n    params:\n      - {{name: url, value: \"{}\"}}\n      - {{name: pathInRepo, value: task.yaml}}\n",
            src.git_url
        ),
    );
    let (code, _, stderr) = src.run("process", &file, &["--offline"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("offline, and") && stderr.contains("is not in the cache"),
        "{stderr}"
    );
    let (code, _, stderr) = src.run("process", &file, &[]);
    assert_eq!(code, 0, "{stderr}");
    let (code, v, stderr) = src.run("process", &file, &["--offline"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("hello Cy from a StepAction fetched by git"),
        "{stderr}"
    );
    assert_eq!(
        v["status"]["provenance"]["refSource"]["entryPoint"],
        "task.yaml"
    );
}

#[test]
fn bundle_push_and_list_speak_tekton_bundles() {
    if !registry_ready() {
        return;
    }
    let src = Sources::start("bundle-cli", true);
    let out = tkt(&["bundle", "list", &src.bundle]);
    assert_eq!(text(&out.stdout), "task.tekton.dev/from-bundle\n");
    let out = tkt(&["bundle", "list", &src.bundle, "pipelines"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no objects of kind \"pipeline\" found"));
    // Invalid input is refused before anything is pushed.
    let bad = src.s.file(
        "bad.yaml",
        "apiVersion: tekton.dev/v1\nkind: Task\nmetadata: {name: b}\nspec:\n  steps: []\n",
    );
    let out = tkt(&[
        "bundle",
        "push",
        &src.bundle.replace(":v1", ":v2"),
        "-f",
        &bad,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("bad.yaml"),
        "{}",
        text(&out.stderr)
    );
    let out = tkt(&["bundle", "list", &src.bundle.replace(":v1", ":v2")]);
    assert_eq!(out.status.code(), Some(1), "nothing was pushed");
}
