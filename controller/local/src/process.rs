//! The process runtime: the engine's pod run as host processes, for
//! machines without a container runtime.
//!
//! Every container of the pod (init containers first, one after another;
//! then steps and sidecars at once, ordered by the entrypoint's markers as
//! in a pod) becomes a process in a private mount namespace (`unshare`),
//! where tmpfs mounts over `/tekton`, `/workspace` and `/ko-app` receive the
//! container's volume mounts (bind mounts of the run directory's
//! folders). So the pod's paths, `/tekton/results/x` written literally
//! included, mean the same thing as in a container. The image is not used:
//! commands run with this machine's tools. This needs root on Linux.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tektite_engine::podman;

use crate::runtime::{RuntimeError, Signal};
use crate::store::Store;

/// The roots that get a tmpfs of their own in each process's namespace.
const ROOTS: &[&str] = &["/tekton", "/workspace", "/ko-app"];

/// Whether this machine can run pods as processes, or why not.
pub fn available() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(
            "the process runtime needs root: it binds the run directory at /tekton and \
                    /workspace in a private mount namespace, so that paths in Tasks mean what they \
                    mean in a pod"
                .into(),
        );
    }
    for tool in ["unshare", "mount", "sh"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Err(format!("{tool} is not installed (util-linux)"));
        }
    }
    Ok(())
}

/// The entrypoint binary for the process runtime: `TEKTITE_ENTRYPOINT`, else
/// `entrypoint` beside this executable, else the static build.
pub fn entrypoint_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TEKTITE_ENTRYPOINT") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("entrypoint"));
        // target/<profile>/deps/… when run from tests.
        if let Some(up) = dir.parent() {
            candidates.push(up.join("entrypoint"));
        }
    }
    candidates.extend(
        std::fs::read_dir("target")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("entrypoint/entrypoint")),
    );
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        "no entrypoint binary: build it (hack/build-entrypoint.sh) or set TEKTITE_ENTRYPOINT".into()
    })
}

#[derive(Debug, Default)]
struct ProcState {
    started: Option<Timestamp>,
    finished: Option<Timestamp>,
    code: Option<i32>,
    pgid: Option<i32>,
}

/// A pod run as host processes.
#[derive(Debug)]
pub struct ProcessPod {
    pod: Pod,
    run_dir: PathBuf,
    ready_file: Option<PathBuf>,
    ready_written: bool,
    procs: Vec<(String, Arc<Mutex<ProcState>>)>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn err(what: impl Into<String>, message: impl Into<String>) -> RuntimeError {
    RuntimeError {
        what: what.into(),
        message: message.into(),
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The shell text that sets up one container's mounts, then `exec`s its
/// command (given as positional parameters).
fn setup_script(c: &Container, volumes: &BTreeMap<String, PathBuf>, entrypoint: &Path) -> String {
    let mut s = String::from("set -e\n");
    for r in ROOTS {
        s.push_str(&format!("mount -t tmpfs tektite {r}\n"));
    }
    s.push_str(&format!(
        "touch /ko-app/entrypoint && mount --bind {} /ko-app/entrypoint\n",
        shell_quote(&entrypoint.to_string_lossy())
    ));
    // Parents before children, as a kubelet mounts them (`/workspace`
    // before `/workspace/source`).
    let mut mounts: Vec<_> = c.volume_mounts.iter().flatten().collect();
    mounts.sort_by_key(|m| Path::new(&m.mount_path).components().count());
    for m in mounts {
        let Some(host) = volumes.get(&m.name) else {
            continue;
        };
        let mut src = host.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|x| !x.is_empty()) {
            src = src.join(sub);
            s.push_str(&format!(
                "mkdir -p {}\n",
                shell_quote(&src.to_string_lossy())
            ));
        }
        let dst = shell_quote(&m.mount_path);
        s.push_str(&format!(
            "mkdir -p {dst}\nmount --bind {} {dst}\n",
            shell_quote(&src.to_string_lossy())
        ));
        if m.read_only == Some(true) {
            s.push_str(&format!("mount -o remount,bind,ro {dst}\n"));
        }
    }
    let wd = c.working_dir.clone().unwrap_or_else(|| "/".into());
    s.push_str(&format!(
        "mkdir -p {0} && cd {0}\nexec \"$@\"\n",
        shell_quote(&wd)
    ));
    s
}

fn command_of(c: &Container) -> Vec<String> {
    let mut v = c.command.clone().unwrap_or_default();
    v.extend(c.args.clone().unwrap_or_default());
    v
}

impl ProcessPod {
    /// Prepares the run directory, runs the init containers, then starts
    /// every container.
    ///
    /// # Errors
    /// A directory cannot be made, or an init container fails.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        pod: &Pod,
        task_run: &str,
        run_dir: &Path,
        claims: &BTreeMap<String, PathBuf>,
        claims_dir: &Path,
        store: &Store,
        signals: &Sender<Signal>,
        entrypoint: &Path,
    ) -> Result<ProcessPod, RuntimeError> {
        for r in ROOTS {
            std::fs::create_dir_all(r)
                .map_err(|e| err(format!("mount point {r}"), e.to_string()))?;
        }
        let adapted = podman::adapt(pod, run_dir, claims_dir);
        let mut volumes: BTreeMap<String, PathBuf> = BTreeMap::new();
        for v in adapted
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
        {
            if let Some(hp) = &v.host_path {
                let mut p = PathBuf::from(&hp.path);
                for (claim, path) in claims {
                    if p == claims_dir.join(claim) {
                        p = path.clone();
                    }
                }
                std::fs::create_dir_all(&p)
                    .map_err(|e| err(format!("directory {}", p.display()), e.to_string()))?;
                volumes.insert(v.name.clone(), p);
            }
        }
        let spec = adapted.pod.spec.clone().unwrap_or_default();
        let env_of = |c: &Container| -> Vec<(String, String)> {
            c.env
                .iter()
                .flatten()
                .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
                .collect()
        };
        let spawn = |c: &Container| -> Result<std::process::Child, RuntimeError> {
            let script = setup_script(c, &volumes, entrypoint);
            let mut cmd = Command::new("unshare");
            cmd.args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .args(command_of(c))
            .envs(env_of(c))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
            cmd.spawn().map_err(|e| {
                err(
                    format!("container {}", c.name),
                    format!("cannot start: {e}"),
                )
            })
        };
        for c in spec.init_containers.iter().flatten() {
            let out = spawn(c)?
                .wait_with_output()
                .map_err(|e| err(format!("init container {}", c.name), e.to_string()))?;
            if !out.status.success() {
                return Err(err(
                    format!("init container {}", c.name),
                    format!(
                        "exited with {}: {}",
                        out.status.code().unwrap_or(-1),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ));
            }
        }
        let mut p = ProcessPod {
            pod: pod.clone(),
            run_dir: run_dir.to_path_buf(),
            ready_file: adapted.ready_file.clone(),
            ready_written: false,
            procs: Vec::new(),
            threads: Vec::new(),
        };
        for c in &spec.containers {
            let state = Arc::new(Mutex::new(ProcState::default()));
            let mut child = spawn(c)?;
            if let Ok(mut s) = state.lock() {
                s.started = Some(Timestamp::now());
                s.pgid = i32::try_from(child.id()).ok();
            }
            let log = Arc::new(Mutex::new(
                store
                    .open_log(task_run, &c.name)
                    .map_err(|e| err("log", e.to_string()))?,
            ));
            let mut readers = Vec::new();
            for pipe in [
                child
                    .stdout
                    .take()
                    .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
                child
                    .stderr
                    .take()
                    .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
            ]
            .into_iter()
            .flatten()
            {
                let (log, tx, tr, name) = (
                    log.clone(),
                    signals.clone(),
                    task_run.to_string(),
                    c.name.clone(),
                );
                readers.push(std::thread::spawn(move || {
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        if let Ok(mut f) = log.lock() {
                            let _ = writeln!(f, "{line}");
                        }
                        let _ = tx.send(Signal::Line {
                            task_run: tr.clone(),
                            container: name.clone(),
                            line,
                        });
                    }
                }));
            }
            let (st, tx) = (state.clone(), signals.clone());
            p.threads.push(std::thread::spawn(move || {
                let status = child.wait();
                for r in readers {
                    let _ = r.join();
                }
                if let Ok(mut s) = st.lock() {
                    s.finished = Some(Timestamp::now());
                    s.code = Some(match status {
                        Ok(st) => st.code().unwrap_or_else(|| {
                            use std::os::unix::process::ExitStatusExt as _;
                            128 + st.signal().unwrap_or(0)
                        }),
                        Err(_) => 255,
                    });
                }
                let _ = tx.send(Signal::Changed);
            }));
            p.procs.push((c.name.clone(), state));
        }
        Ok(p)
    }

    /// The pod with a status built from the processes and step reports.
    pub fn observe(&mut self) -> Pod {
        let mut pod = self.pod.clone();
        let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let mut statuses = Vec::new();
        for (i, (name, state)) in self.procs.iter().enumerate() {
            let s = state
                .lock()
                .map(|s| (s.started, s.finished, s.code))
                .unwrap_or_default();
            let st = match s {
                (started, Some(finished), Some(code)) => ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                        started_at: started.map(Time),
                        finished_at: Some(Time(finished)),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                (started, _, _) => ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: started.map(Time),
                    }),
                    ..Default::default()
                },
            };
            statuses.push(ContainerStatus {
                name: name.clone(),
                ready: st.running.is_some(),
                state: Some(st),
                ..Default::default()
            });
            if name.starts_with("step-") {
                let report = self
                    .run_dir
                    .join(format!("tekton-internal-run-{i}/status/report.json"));
                if let Ok(r) = std::fs::read_to_string(report) {
                    annotations.insert(format!("tektite.dev/step.{name}"), r);
                }
            }
        }
        pod.metadata.annotations = Some(annotations);
        let steps: Vec<&ContainerStatus> = statuses
            .iter()
            .filter(|s| s.name.starts_with("step-"))
            .collect();
        let ended = |s: &&ContainerStatus| s.state.as_ref().is_some_and(|x| x.terminated.is_some());
        let all_done = steps.iter().all(ended);
        let failed = steps.iter().any(|s| {
            s.state
                .as_ref()
                .and_then(|x| x.terminated.as_ref())
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

    pub fn mark_ready(&mut self) {
        if let (Some(f), false) = (&self.ready_file, self.ready_written) {
            self.ready_written = std::fs::write(f, "READY").is_ok();
        }
    }

    pub fn waits_for_ready(&self) -> bool {
        self.ready_file.is_some() && !self.ready_written
    }

    fn signal_all(&self, sig: nix::sys::signal::Signal) -> usize {
        let mut alive = 0;
        for (_, state) in &self.procs {
            if let Ok(s) = state.lock()
                && s.code.is_none()
                && let Some(pg) = s.pgid
            {
                alive += 1;
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pg), sig);
            }
        }
        alive
    }

    /// Stops every process that still runs: SIGTERM (the entrypoint passes
    /// it on to its step's process group), SIGKILL two seconds later.
    pub fn stop(&mut self) {
        if self.signal_all(nix::sys::signal::Signal::SIGTERM) == 0 {
            return;
        }
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(2) {
            let alive = self
                .procs
                .iter()
                .filter(|(_, s)| s.lock().is_ok_and(|s| s.code.is_none()))
                .count();
            if alive == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.signal_all(nix::sys::signal::Signal::SIGKILL);
    }

    /// Stops what still runs (sidecars) and waits for every process.
    pub fn finish(mut self) {
        self.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
