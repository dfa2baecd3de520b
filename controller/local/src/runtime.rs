//! Where a TaskRun's pod runs on this machine. The podman runtime plays the
//! engine's pod with `podman kube play`; what it observes (container states,
//! the step reports in the run directory) is handed back to the engine as a
//! Pod with status, the same shape a kubelet reports.

use std::collections::BTreeMap;
use std::fs::Permissions;
use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostPathVolumeSource, Pod, PodSpec, PodStatus, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tektite_api::v1::ImagePull;
use tektite_engine::pod::ImageCommand;
use tektite_engine::podman;

use crate::beneath;
use crate::live::Journal;
use crate::logs::Sink;
use crate::procs::ProcId;
use crate::store::Store;

/// What a runtime needs to start a TaskRun's pod, besides the pod.
#[derive(Debug, Clone, Copy)]
pub struct PodEnv<'a> {
    pub task_run: &'a str,
    /// The pod's own directory (volumes, scripts, subPath mounts).
    pub run_dir: &'a Path,
    /// Where the pod's bookkeeping volumes go ([`crate::tmpfs`]): a
    /// directory on a tmpfs, or `run_dir` itself.
    pub fast_dir: &'a Path,
    /// Claims bound to host directories (`-w name=PATH`): claim → path.
    pub claims: &'a BTreeMap<String, PathBuf>,
    /// Where provisioned claims live.
    pub claims_dir: &'a Path,
    pub store: &'a Store,
    pub signals: &'a SyncSender<Signal>,
    /// Between SIGTERM and SIGKILL when the pod is stopped (a kubelet's
    /// `terminationGracePeriodSeconds`).
    pub grace: Duration,
    /// Where what the pod starts is recorded, so that nothing outlives a
    /// `tkt` that dies.
    pub journal: Option<&'a Journal>,
    /// Registries (`host[:port]`) images are pulled from over plain HTTP
    /// (the dev cluster's; `tkt` leaves this to `registries.conf`).
    pub plain_http: &'a [String],
}

impl PodEnv<'_> {
    /// Where the pod's volumes go.
    pub fn host_dirs(&self) -> podman::HostDirs<'_> {
        podman::HostDirs {
            run: self.run_dir,
            fast: self.fast_dir,
            claims: self.claims_dir,
        }
    }

    /// The directories `tkt` made for the pod's volumes (not the user's).
    fn own_dirs(&self) -> [&Path; 3] {
        [self.run_dir, self.fast_dir, self.claims_dir]
    }
}

/// Something a running pod tells the runner.
#[derive(Debug, Clone)]
pub enum Signal {
    /// A container changed state: observe again.
    Changed,
    /// Lines of a container's output, in order (those of one read), each
    /// ending with a newline.
    Lines {
        task_run: String,
        container: String,
        text: String,
    },
}

/// Starts `cmd` (a [`crate::procs::session_command`]) and records its
/// session in the run's journal. A session that cannot be recorded is
/// killed: nothing would stop it if `tkt` died.
///
/// # Errors
/// `what` cannot be started, or the journal cannot be written.
pub(crate) fn spawn_in_session(
    cmd: &mut Command,
    what: &str,
    journal: Option<&Journal>,
    leader_last: bool,
) -> Result<(std::process::Child, Option<ProcId>), RuntimeError> {
    let mut child = cmd
        .spawn()
        .map_err(|e| err(what, format!("cannot start: {e}")))?;
    let leader = i32::try_from(child.id()).ok().and_then(ProcId::of);
    if let (Some(j), Some(l)) = (journal, leader)
        && let Err(e) = j.session(l, leader_last)
    {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err("run journal", e.to_string()));
    }
    Ok((child, leader))
}

/// A runtime failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct RuntimeError {
    pub what: String,
    pub message: String,
}

pub(crate) fn err(what: impl Into<String>, message: impl Into<String>) -> RuntimeError {
    RuntimeError {
        what: what.into(),
        message: message.into(),
    }
}

/// Runs a command and returns its stdout, or its stderr as the error.
pub(crate) fn output(what: &str, cmd: &mut Command) -> Result<String, RuntimeError> {
    // Its own process group: a Ctrl-C at the terminal is tkt's to handle.
    let out = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(what, format!("cannot run podman: {e}")))?;
    if !out.status.success() {
        return Err(err(
            what,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether podman works here (for `--runtime auto`), with the reason when
/// not: it lists containers, which needs its storage and database as this
/// user (`podman info`, which also gathers host figures, takes ten times
/// as long). A broken OCI runtime shows at `podman kube play`, with
/// podman's own message.
pub fn podman_available() -> Result<String, String> {
    match Command::new("podman")
        .args(["ps", "--all", "--quiet", "--filter", "name=^tektite-probe$"])
        .process_group(0)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok("podman".into()),
        Ok(o) => Err(format!(
            "podman does not work here: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .trim()
        )),
        Err(_) => Err("podman is not installed".into()),
    }
}

/// Whether podman has every one of `images` here (no pull).
pub fn images_present<S: AsRef<std::ffi::OsStr>>(images: &[S]) -> bool {
    Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Id}}", "--"])
        .args(images)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The command of a local image (`Entrypoint` and `Cmd` of its config),
/// pulling it first when podman does not have it.
///
/// # Errors
/// The image cannot be found or pulled.
pub fn image_command(image: &str) -> Result<ImageCommand, RuntimeError> {
    let what = format!("image {image}");
    let inspect = || {
        output(
            &what,
            Command::new("podman").args([
                "image",
                "inspect",
                "--format",
                "{{json .Config.Entrypoint}}\n{{json .Config.Cmd}}",
                "--",
                image,
            ]),
        )
    };
    let text = match inspect() {
        Ok(t) => t,
        Err(_) => {
            output(
                &what,
                Command::new("podman").args(["pull", "--quiet", "--", image]),
            )?;
            inspect()?
        }
    };
    let mut lines = text.lines();
    let parse = |l: Option<&str>| -> Vec<String> {
        l.and_then(|l| serde_json::from_str::<Option<Vec<String>>>(l).ok())
            .flatten()
            .unwrap_or_default()
    };
    Ok(ImageCommand {
        entrypoint: parse(lines.next()),
        cmd: parse(lines.next()),
    })
}

/// The phase a kubelet would give a pod with these container states:
/// Succeeded or Failed once every step has ended (Failed when a step, or
/// a sidecar that ended before them, failed), Running while any container
/// runs, else Pending.
pub fn phase(statuses: &[ContainerStatus]) -> &'static str {
    let steps: Vec<&ContainerStatus> = statuses
        .iter()
        .filter(|s| s.name.starts_with("step-"))
        .collect();
    let terminated = |s: &ContainerStatus| s.state.as_ref().and_then(|x| x.terminated.clone());
    let all_done = !steps.is_empty() && steps.iter().all(|s| terminated(s).is_some());
    let failed = steps
        .iter()
        .any(|s| terminated(s).is_some_and(|t| t.exit_code != 0));
    // A sidecar that ended in failure fails the pod once everything has
    // ended (a kubelet's `Failed`: restartPolicy Never); sidecars still
    // running when the steps end are stopped after, and do not.
    let sidecar_failed = statuses
        .iter()
        .filter(|s| !s.name.starts_with("step-"))
        .all(|s| terminated(s).is_some())
        && statuses.iter().any(|s| {
            !s.name.starts_with("step-") && terminated(s).is_some_and(|t| t.exit_code != 0)
        });
    let failed = failed || sidecar_failed;
    match (all_done, failed) {
        (true, true) => "Failed",
        (true, false) => "Succeeded",
        _ if statuses
            .iter()
            .any(|s| s.state.as_ref().is_some_and(|x| x.running.is_some())) =>
        {
            "Running"
        }
        _ => "Pending",
    }
}

/// A pod played by podman.
#[derive(Debug)]
pub struct PodmanPod {
    name: String,
    task_run: String,
    /// The pod as the engine built it (what observations are based on).
    pod: Pod,
    run_dir: PathBuf,
    ready_file: Option<PathBuf>,
    ready_written: bool,
    /// The readiness and startup probes of its containers.
    probes: crate::probe::Probes,
    grace: Duration,
    /// How the pod ended, as its log followers need to know (`ended`:
    /// an observation found every container ended, nothing to stop).
    ends: Arc<crate::podman_logs::PodEnds>,
    /// The name of the pod's infra container, when podman said its ID.
    infra: Option<String>,
    reports: StepReports,
    followers: Vec<std::thread::JoinHandle<()>>,
    /// The images pulled for it, and when.
    pulls: Vec<ImagePull>,
}

/// Waits for `child` to end, looking every 10 ms, unless `give_up` says
/// so first: then it is killed. Its status, when it ended on its own.
fn wait_unless(
    child: &mut std::process::Child,
    give_up: impl Fn() -> bool,
) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if give_up() => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
}

/// The engine's pod made playable by podman on this machine: adapted
/// (`podman::adapt`, claims bound to host directories included), the
/// directories standing for volumes made, subPath mounts given volumes of
/// their own, and termination files mounted.
fn podman_spec(pod: &Pod, env: &PodEnv<'_>) -> Result<podman::Adapted, RuntimeError> {
    let mut adapted = podman::adapt(pod, env.host_dirs(), env.claims);
    crate::prepare::merge_run_volumes(&mut adapted, env.fast_dir);
    make_volume_dirs(&adapted.dirs, env)?;
    if let Some(spec) = adapted.pod.spec.as_mut() {
        subpath_volumes(spec, env)?;
        termination_files(spec, env.fast_dir)?;
        without_probes(spec);
        if let Some(entrypoint) = static_entrypoint() {
            crate::prepare::on_host(spec, &[env.run_dir, env.fast_dir], entrypoint)?;
        }
        crate::prepare::scripts_on_host(spec, env.run_dir)?;
    }
    Ok(adapted)
}

/// This machine's entrypoint binary, when it is static (it runs in any
/// image): podman's containers get it instead of the `prepare` init
/// container's copy from the entrypoint image.
fn static_entrypoint() -> Option<&'static Path> {
    static FOUND: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            crate::process::entrypoint_candidates()
                .into_iter()
                .find(|p| crate::prepare::is_static(p))
        })
        .as_deref()
}

/// The pod's readiness and startup probes are run by `tkt` itself
/// ([`crate::probe`]): podman, which may turn them into healthchecks that
/// need a timer service or restarts the container, does not see them.
fn without_probes(spec: &mut PodSpec) {
    for c in podman::containers_mut(spec) {
        c.readiness_probe = None;
        c.startup_probe = None;
    }
}

/// Runs an exec probe's command in a container of a podman pod: `podman
/// exec` in a session of its own.
#[derive(Debug)]
struct PodmanExec {
    pod: String,
}

impl crate::probe::ExecIn for PodmanExec {
    fn command(&self, container: &str, argv: &[String]) -> Option<Command> {
        let mut cmd = crate::procs::session_command("podman");
        cmd.args(["exec", &format!("{}-{container}", self.pod)])
            .args(argv);
        Some(cmd)
    }

    fn allowance(&self) -> Duration {
        Duration::from_secs(2)
    }
}

/// The pod's address, where tcpSocket and httpGet probes connect as a
/// kubelet connects to the pod IP: the address podman gave the pod on its
/// network (reachable from this machine with rootful podman), `127.0.0.1`
/// with `hostNetwork`, else why there is none.
fn pod_address(inspected: &[serde_json::Value], host_network: bool) -> Result<String, String> {
    if host_network {
        return Ok("127.0.0.1".into());
    }
    let from_networks = |v: &serde_json::Value| {
        v["NetworkSettings"]["Networks"]
            .as_object()?
            .values()
            .find_map(|n| n["IPAddress"].as_str().filter(|a| !a.is_empty()))
            .map(str::to_string)
    };
    inspected.iter().find_map(from_networks).ok_or_else(|| {
        "the pod has no IP address this machine can reach (rootless podman gives none): \
         use an exec probe, or run as root"
            .into()
    })
}

/// Kills the containers whose startup probe failed for good, as a
/// kubelet does (the pod does not restart them).
fn kill_containers(pod: &str, containers: &[String]) {
    for c in containers {
        let _ = Command::new("podman")
            .args(["kill", &format!("{pod}-{c}")])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Makes the run directory and the fast directory when a volume is under
/// it (only `tkt` goes in: 0700), and the directories standing for the
/// pod's volumes under them or under the claims directory, none of them
/// through a symlink. Volumes are world-writable as a
/// kubelet makes emptyDirs (a step with `runAsUser` writes to them too);
/// other users of this machine cannot reach them through the 0700 run
/// and store directories above.
pub(crate) fn make_volume_dirs(dirs: &[PathBuf], env: &PodEnv<'_>) -> Result<(), RuntimeError> {
    // The run and fast directories are tkt's own paths (no container sees
    // them).
    let fast = env.fast_dir != env.run_dir && dirs.iter().any(|d| d.starts_with(env.fast_dir));
    for own in std::iter::once(env.run_dir).chain(fast.then_some(env.fast_dir)) {
        let make = || {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(own)
        };
        // Once more if another run's end removed the store's directory on
        // the tmpfs as this one made its own in it.
        make()
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => make(),
                _ => Err(e),
            })
            .and_then(|()| std::fs::set_permissions(own, Permissions::from_mode(0o700)))
            .map_err(|e| err(format!("directory {}", own.display()), e.to_string()))?;
    }
    let roots = env.own_dirs();
    for d in dirs.iter().filter(|d| *d != env.run_dir) {
        let (root, rel) = beneath::split(d, &roots).ok_or_else(|| {
            err(
                format!("directory {}", d.display()),
                "is outside the run, fast and claims directories",
            )
        })?;
        beneath::dir(root, rel, 0o777).map_err(|e| err("volume directory", e.to_string()))?;
    }
    Ok(())
}

/// The host directory a subPath mount stands for: `sub` beneath the
/// volume's directory `base`, made if missing as a kubelet makes it, and
/// never through a symlink a step may have left in the volume. What is
/// made in volumes this run provisioned gets mode 0777 (as their root
/// has); in a directory of the user's (`-w name=PATH`), 0755.
fn subpath_dir(
    base: &Path,
    sub: &str,
    env: &PodEnv<'_>,
    what: &str,
) -> Result<PathBuf, RuntimeError> {
    let ours = env.own_dirs().iter().any(|r| base.starts_with(r));
    let mode = if ours { 0o777 } else { 0o755 };
    beneath::dir(base, Path::new(sub), mode).map_err(|e| err(what, format!("subPath {sub:?}: {e}")))
}

/// What a subPath mount stands for: a regular file already in the
/// volume (a key of a configMap or secret volume, say), mounted as that
/// file; else a directory, as [`subpath_dir`] makes it.
fn subpath_target(
    base: &Path,
    sub: &str,
    env: &PodEnv<'_>,
    what: &str,
) -> Result<(PathBuf, &'static str), RuntimeError> {
    if beneath::is_file(base, Path::new(sub)) {
        return Ok((base.join(sub), "File"));
    }
    Ok((subpath_dir(base, sub, env, what)?, "Directory"))
}

/// A hostPath volume `name` on `path`, of `kind` (`File`, `Directory`).
pub(crate) fn host_path_volume(name: &str, path: &Path, kind: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_string_lossy().into_owned(),
            type_: Some(kind.into()),
        }),
        ..Default::default()
    }
}

/// podman 4 ignores `subPath` on hostPath volumes: each such mount gets a
/// volume of its own, on the subdirectory (the process runtime's mounts
/// and path tables take them the same way).
pub(crate) fn subpath_volumes(spec: &mut PodSpec, env: &PodEnv<'_>) -> Result<(), RuntimeError> {
    let hosts: BTreeMap<String, String> = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| Some((v.name.clone(), v.host_path.as_ref()?.path.clone())))
        .collect();
    let mut extra = Vec::new();
    for c in podman::containers_mut(spec) {
        for m in c.volume_mounts.iter_mut().flatten() {
            let Some(sub) = m.sub_path.take().filter(|s| !s.is_empty()) else {
                continue;
            };
            let Some(base) = hosts.get(&m.name) else {
                continue;
            };
            let what = format!("container {} volumeMount {}", c.name, m.mount_path);
            let (host, kind) = subpath_target(Path::new(base), &sub, env, &what)?;
            let name = format!("tektite-sub-{}", extra.len());
            extra.push(host_path_volume(&name, &host, kind));
            m.name = name;
        }
    }
    spec.volumes.get_or_insert_default().extend(extra);
    Ok(())
}

/// A kubelet mounts a world-writable file at each container's
/// terminationMessagePath; podman does not, and a step running as another
/// user than root cannot create it in the image's `/tekton`. Made new in
/// the run directory (which no container sees), never through a link.
fn termination_files(spec: &mut PodSpec, run_dir: &Path) -> Result<(), RuntimeError> {
    for (i, c) in spec.containers.iter_mut().enumerate() {
        let Some(at) = c.termination_message_path.clone() else {
            continue;
        };
        let rel = format!("termination-{i}");
        beneath::create(run_dir, Path::new(&rel), b"", 0o666)
            .map_err(|e| err("termination file", e.to_string()))?;
        let host = run_dir.join(rel);
        let volume = format!("tektite-termination-{i}");
        spec.volumes
            .get_or_insert_default()
            .push(host_path_volume(&volume, &host, "File"));
        c.volume_mounts.get_or_insert_default().push(VolumeMount {
            name: volume,
            mount_path: at,
            ..Default::default()
        });
    }
    Ok(())
}

/// The largest step report read back from a run directory: results are
/// capped by the entrypoint's own limit (it is written by code in the
/// pod, so it is checked again by the engine), this only bounds the read.
pub(crate) const REPORT_LIMIT: u64 = 64 << 20;

/// Step `i`'s report as its entrypoint left it under `run_dir` (`rel`), if
/// it is there and is a regular file within [`REPORT_LIMIT`]: what a step
/// put there instead (a link to a host file, a FIFO, a huge file) is
/// reported on stderr and not read.
pub(crate) fn read_report(run_dir: &Path, rel: &str) -> Option<String> {
    match beneath::read(run_dir, Path::new(rel), REPORT_LIMIT) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(beneath::BeneathError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            None
        }
        Err(e) => {
            eprintln!("tkt: step report not read: {e}");
            None
        }
    }
}

/// The reports of a pod's steps, each read once its container has ended
/// (the step writes no more then, and the engine reads no other: a step
/// still to run is not looked for) and given as the annotations its
/// entrypoint writes on a cluster.
#[derive(Debug)]
pub(crate) struct StepReports {
    run_dir: PathBuf,
    /// The reports are in the rewrite mode's file tree (the process
    /// runtime without namespaces), not in the steps' run directories.
    tree: bool,
    read: BTreeMap<String, String>,
}

impl StepReports {
    pub(crate) fn new(run_dir: &Path, tree: bool) -> StepReports {
        StepReports {
            run_dir: run_dir.to_path_buf(),
            tree,
            read: BTreeMap::new(),
        }
    }

    /// Adds the report of container `i` (`name`) to `annotations` when it
    /// is a step whose container has `ended`.
    pub(crate) fn annotate(
        &mut self,
        annotations: &mut BTreeMap<String, String>,
        i: usize,
        name: &str,
        ended: bool,
    ) {
        if !ended || !name.starts_with("step-") {
            return;
        }
        if !self.read.contains_key(name) {
            let rel = if self.tree {
                format!("fs/tekton/run/{i}/status/report.json")
            } else {
                crate::prepare::step_report(i)
            };
            let Some(r) = read_report(&self.run_dir, &rel) else {
                return;
            };
            self.read.insert(name.to_string(), r);
        }
        if let Some(r) = self.read.get(name) {
            annotations.insert(format!("tektite.dev/step.{name}"), r.clone());
        }
    }
}

/// A container that ended with `code`, as a kubelet reports it: reason
/// `OOMKilled` when the kernel killed it for memory (`oom`), else
/// `Completed` or `Error` by its code.
pub(crate) fn terminated(
    code: i32,
    oom: bool,
    started_at: Option<Time>,
    finished_at: Option<Time>,
    message: Option<String>,
) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(terminated_reason(code, oom).into()),
            started_at,
            finished_at,
            message,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The reason of [`terminated`].
pub(crate) fn terminated_reason(code: i32, oom: bool) -> &'static str {
    match code {
        _ if oom => "OOMKilled",
        0 => "Completed",
        _ => "Error",
    }
}

/// Releases a pod's first step: the ready file, made new beneath the run
/// directory (a link a step planted there is not written through).
pub(crate) fn write_ready(run_dir: &Path, file: &Path) -> bool {
    let Ok(rel) = file.strip_prefix(run_dir) else {
        return false;
    };
    match beneath::create(run_dir, rel, b"READY", 0o644) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("tkt: cannot release the pod's steps: {e}");
            false
        }
    }
}

/// The full names of `pod`'s containers (played as pod `name`) in the
/// order they are started: sidecars first, then the steps in their order.
fn start_order(pod: &Pod, name: &str) -> Vec<String> {
    let containers = pod
        .spec
        .as_ref()
        .map_or(&[][..], |s| s.containers.as_slice());
    let (steps, sidecars): (Vec<_>, Vec<_>) =
        containers.iter().partition(|c| c.name.starts_with("step-"));
    sidecars
        .into_iter()
        .chain(steps)
        .map(|c| format!("{name}-{}", c.name))
        .collect()
}

/// Removes a pod podman may have made, whatever state it is in.
fn remove_pod(name: &str) {
    let _ = Command::new("podman")
        .args(["pod", "rm", "--force", "--time", "0", name])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Plays the pod written to `file`, recorded in the run's journal first so
/// that it is removed whatever happens to `tkt`, in a session of its own
/// ([`spawn_pod_command`]); `start`: podman starts its
/// containers too (else they are only made, for [`start_in_order`]).
/// Returns what podman printed: the IDs of the pod and its containers.
fn play(
    name: &str,
    file: &Path,
    start: bool,
    journal: Option<&Journal>,
) -> Result<String, RuntimeError> {
    if let Some(j) = journal {
        j.podman_pod(name)
            .map_err(|e| err("run journal", e.to_string()))?;
    }
    // The k8s-file driver, whatever the machine's default: its files are
    // what the log followers read.
    let mut cmd = crate::procs::session_command("podman");
    cmd.args(["kube", "play", "--log-driver", "k8s-file"]);
    if !start {
        cmd.arg("--start=false");
    }
    cmd.arg(file);
    let what = format!("podman kube play {}", file.display());
    let played = spawn_pod_command(&mut cmd, &what, journal)
        .and_then(|child| pod_command_output(&what, child));
    if played.is_err() {
        // podman may leave what it made of a pod it could not play.
        remove_pod(name);
    }
    played
}

/// Starts the made containers of pod `name` (`full_names`) in that order.
/// `podman kube play` starts a pod's containers in no set order: a step
/// started before the one it waits for can only end after it, and with
/// twenty steps the pod's containers then end together at the last start,
/// each with podman's cleanup to run on two cores (0.9 s more than a plain
/// pod's here). Started in order, each step ends about as it starts, as the
/// containers of a plain pod do. Two `podman start`s take every other
/// container each: podman starts the containers of one call one after
/// another, and two at a time start them sooner (0.2–0.3 s for twenty
/// here) while a step still waits at most for the one started beside it.
fn start_in_order(
    name: &str,
    full_names: &[String],
    journal: Option<&Journal>,
) -> Result<(), RuntimeError> {
    const STARTERS: usize = 2;
    let what = format!("podman start (pod {name})");
    let started: Vec<_> = (0..STARTERS.min(full_names.len()))
        .map(|k| {
            let mut cmd = crate::procs::session_command("podman");
            cmd.arg("start")
                .args(full_names.iter().skip(k).step_by(STARTERS));
            spawn_pod_command(&mut cmd, &what, journal)
        })
        .collect();
    let mut failed = Ok(());
    for child in started {
        if let Err(e) = child.and_then(|c| pod_command_output(&what, c)) {
            failed = failed.and(Err(e));
        }
    }
    failed
}

/// Pulls the images of `pod` that podman does not have, one after
/// another, each `podman pull` in a session of its own recorded in the
/// journal (as [`play`]'s): when each was pulled, for the run's trace
/// (`podman kube play` would pull them too, untimed).
///
/// # Errors
/// An image cannot be pulled: what podman said.
fn pull_missing(pod: &Pod, env: &PodEnv<'_>) -> Result<Vec<ImagePull>, RuntimeError> {
    let mut images: Vec<&str> = Vec::new();
    if let Some(spec) = &pod.spec {
        let all = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers);
        for image in all.filter_map(|c| c.image.as_deref()) {
            if !images.contains(&image) {
                images.push(image);
            }
        }
    }
    let mut pulls = Vec::new();
    // One look for them all: most pods have every image already.
    if images_present(&images) {
        return Ok(pulls);
    }
    for image in images {
        if images_present(&[image]) {
            continue;
        }
        let plain = env.plain_http.iter().any(|h| {
            image
                .strip_prefix(h.as_str())
                .is_some_and(|r| r.starts_with('/'))
        });
        let what = format!("podman pull {image}");
        let mut cmd = crate::procs::session_command("podman");
        cmd.args(["pull", "--quiet"]);
        if plain {
            cmd.arg("--tls-verify=false");
        }
        // `--`: an image named like a flag is an image, not a flag.
        cmd.args(["--", image]);
        let start = Timestamp::now();
        spawn_pod_command(&mut cmd, &what, env.journal)
            .and_then(|child| pod_command_output(&what, child))?;
        pulls.push(ImagePull {
            image: image.to_string(),
            start_time: Some(Time(start)),
            completion_time: Some(Time(Timestamp::now())),
        });
    }
    Ok(pulls)
}

/// Starts a podman command that makes or starts a pod, in a session of its
/// own recorded in the journal and killed with the `tkt` thread that
/// started it: a `tkt` killed meanwhile leaves no `podman` at work on the
/// pod after the cleanup.
fn spawn_pod_command(
    cmd: &mut Command,
    what: &str,
    journal: Option<&Journal>,
) -> Result<std::process::Child, RuntimeError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn_in_session(cmd, what, journal, false).map(|(child, _)| child)
}

/// What a podman command printed, once it has ended; what it said on
/// stderr as the error when it failed.
fn pod_command_output(what: &str, child: std::process::Child) -> Result<String, RuntimeError> {
    let out = child
        .wait_with_output()
        .map_err(|e| err(what, e.to_string()))?;
    if !out.status.success() {
        return Err(err(
            what,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl PodmanPod {
    /// Adapts and plays `pod`; starts following its containers' output
    /// into the store and `signals`, and watching its steps end.
    ///
    /// # Errors
    /// The directories cannot be made or `podman kube play` fails.
    pub fn start(pod: &Pod, env: &PodEnv<'_>) -> Result<PodmanPod, RuntimeError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let adapted = podman_spec(pod, env)?;
        let file = env.run_dir.join("pod.json");
        let json =
            serde_json::to_vec_pretty(&adapted.pod).map_err(|e| err("pod", e.to_string()))?;
        beneath::create(env.run_dir, Path::new("pod.json"), &json, 0o600)
            .map_err(|e| err("pod file", e.to_string()))?;
        // Without init containers (which only podman's own start runs
        // before the others), the containers are started in order.
        let ordered = adapted
            .pod
            .spec
            .as_ref()
            .is_none_or(|s| s.init_containers.as_ref().is_none_or(Vec::is_empty));
        let pulls = pull_missing(&adapted.pod, env)?;
        let report = play(&name, &file, !ordered, env.journal)?;
        let mut p = PodmanPod {
            pulls,
            name: name.clone(),
            task_run: env.task_run.to_string(),
            pod: pod.clone(),
            run_dir: env.run_dir.to_path_buf(),
            ready_file: adapted.ready_file.clone(),
            ready_written: false,
            probes: crate::probe::Probes::new(
                pod.spec.as_ref().map_or(&[], |s| s.containers.as_slice()),
                Arc::new(PodmanExec { pod: name.clone() }),
            ),
            grace: env.grace,
            ends: Arc::default(),
            infra: None,
            reports: StepReports::new(env.fast_dir, false),
            followers: Vec::new(),
        };
        let containers: Vec<String> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let played = crate::podman_logs::Played::parse(&report);
        p.infra = played.infra();
        p.ends.starting.store(ordered, Ordering::SeqCst);
        if let Err(e) = p.follow_logs(&containers, &played, env) {
            remove_pod(&name);
            return Err(e);
        }
        // Followed from their start: the first steps have ended long before
        // the last one starts.
        if ordered {
            let started = start_in_order(&name, &start_order(pod, &name), env.journal);
            p.ends.starting.store(false, Ordering::SeqCst);
            if let Err(e) = started {
                // What did start is stopped and its output read whole
                // before the pod goes.
                p.stop(true);
                for f in p.followers.drain(..) {
                    let _ = f.join();
                }
                remove_pod(&name);
                return Err(e);
            }
        }
        p.watch_steps(&containers, env.signals);
        Ok(p)
    }

    /// The images pulled for the pod before it was played, and when.
    pub fn pulls(&self) -> &[ImagePull] {
        &self.pulls
    }

    /// Follows each container's log file into the store and to the runner
    /// (`played`: what `podman kube play` printed of them). Where each is
    /// comes from [`crate::podman_logs::sources`], off the start's path.
    /// Once every step's file has been read to its end, every step has
    /// ended: the runner is told at once.
    fn follow_logs(
        &mut self,
        containers: &[String],
        played: &crate::podman_logs::Played,
        env: &PodEnv<'_>,
    ) -> Result<(), RuntimeError> {
        let mut sinks = Vec::new();
        for c in containers {
            let log = env
                .store
                .open_log(env.task_run, c)
                .map_err(|e| err("log", e.to_string()))?;
            let full = format!("{}-{c}", self.name);
            let sink = Sink::new(log, env.signals.clone(), env.task_run, c);
            sinks.push((full, sink.masking(env.store.mask()), c.starts_with("step-")));
        }
        let ends = self.ends.clone();
        let played = played.clone();
        let changed = env.signals.clone();
        // A pod of steps only may be observed from its exits at the end
        // (see `observe`), which needs its images' IDs.
        let images = self.steps_only().then(|| self.images());
        self.followers.push(std::thread::spawn(move || {
            let names: Vec<String> = sinks.iter().map(|(f, _, _)| f.clone()).collect();
            let mut sources = crate::podman_logs::sources(&names, &played, &ends)
                .or_else(|| {
                    (0..5).find_map(|attempt| {
                        if attempt > 0 {
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        crate::podman_logs::inspected_sources(&names).ok()
                    })
                })
                .unwrap_or_default();
            let watchable = crate::podman_logs::exits_watchable(&sources, names.len());
            ends.exits_watched.store(watchable, Ordering::SeqCst);
            // Steps run one after another, and their output is printed in
            // that order: each step's follower starts once the one before
            // has read its step's log to the end (the file keeps it all).
            // Sidecars are followed at once.
            let mut followers = Vec::new();
            let mut previous_step: Option<std::thread::JoinHandle<()>> = None;
            for (full, sink, is_step) in sinks {
                let source = sources.remove(&full);
                let ends = ends.clone();
                let after = if is_step { previous_step.take() } else { None };
                let follower = std::thread::spawn(move || {
                    // Looked for as it starts, whatever the steps before
                    // print meanwhile.
                    let source = source.and_then(|s| s.started(&full, &ends));
                    if let Some(before) = after {
                        let _ = before.join();
                    }
                    crate::podman_logs::follow_log(source, &full, &ends, &sink)
                });
                if is_step {
                    previous_step = Some(follower);
                } else {
                    followers.push(follower);
                }
            }
            if let Some(ids) = images.and_then(|i| crate::podman_logs::image_ids(&i))
                && let Ok(mut known) = ends.image_ids.lock()
            {
                *known = Some(ids);
            }
            if let Some(last) = previous_step {
                let _ = last.join();
                let _ = changed.send(Signal::Changed);
            }
            for f in followers {
                let _ = f.join();
            }
        }));
        Ok(())
    }

    /// One watcher: wakes the runner when every step container has ended.
    fn watch_steps(&mut self, containers: &[String], signals: &SyncSender<Signal>) {
        let steps: Vec<String> = containers
            .iter()
            .filter(|c| c.starts_with("step-"))
            .map(|c| format!("{}-{c}", self.name))
            .collect();
        let tx = signals.clone();
        let ends = self.ends.clone();
        self.followers.push(std::thread::spawn(move || {
            let Ok(mut child) = Command::new("podman")
                .arg("wait")
                .args(&steps)
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
            else {
                return;
            };
            // Not waited for once the pod is being finished: what it would
            // say is known by then.
            let Some(status) = wait_unless(&mut child, || ends.stopped.load(Ordering::SeqCst))
            else {
                return;
            };
            let mut codes = String::new();
            if let Some(mut out) = child.stdout.take() {
                let _ = out.read_to_string(&mut codes);
            }
            if status.success() {
                crate::podman_logs::record_waited(&ends, &steps, &codes);
            }
            let _ = tx.send(Signal::Changed);
        }));
    }

    /// Waits (at most a few seconds) for podman to have stopped the pod's
    /// infra container, which it does once every other container has
    /// ended: a `podman pod rm` while podman is at it waited for seconds
    /// (3.6–4 s of 7 here).
    fn wait_for_infra(&self) {
        let Some(infra) = &self.infra else { return };
        let Ok(mut child) = Command::new("podman")
            .args(["wait", infra])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(3);
        let _ = wait_unless(&mut child, || Instant::now() > deadline);
    }

    /// The pod with a status, as a kubelet would report it, and the step
    /// reports as the annotations the entrypoint writes on a cluster.
    ///
    /// # Errors
    /// `podman inspect` fails.
    pub fn observe(&mut self) -> Result<Pod, RuntimeError> {
        if let Some(pod) = self.observe_exits() {
            return Ok(pod);
        }
        let pod = self.pod.clone();
        let containers: Vec<String> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let full: Vec<String> = containers
            .iter()
            .map(|c| format!("{}-{c}", self.name))
            .collect();
        let text = output(
            &format!("podman inspect (pod {})", self.name),
            Command::new("podman").arg("inspect").args(&full),
        )?;
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| err("podman inspect", e.to_string()))?;
        let by_name: BTreeMap<String, &serde_json::Value> = list
            .iter()
            .filter_map(|v| Some((v["Name"].as_str()?.to_string(), v)))
            .collect();
        let mut statuses = Vec::new();
        let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
        for (i, c) in containers.iter().enumerate() {
            let Some(v) = by_name.get(&format!("{}-{c}", self.name)) else {
                continue;
            };
            let state = container_state(&v["State"]);
            let ended = state.terminated.is_some();
            statuses.push(ContainerStatus {
                name: c.clone(),
                image: v["ImageName"].as_str().unwrap_or_default().to_string(),
                image_id: v["Image"].as_str().unwrap_or_default().to_string(),
                state: Some(state),
                ..Default::default()
            });
            self.reports.annotate(&mut annotations, i, c, ended);
        }
        self.probe(&pod, &list, &mut statuses, &mut annotations);
        let all_ended = statuses.len() == containers.len()
            && statuses
                .iter()
                .all(|s| s.state.as_ref().is_some_and(|x| x.terminated.is_some()));
        Ok(self.observed(pod, statuses, annotations, all_ended))
    }

    /// `pod` with these statuses and annotations; that every container
    /// has ended is kept (nothing to stop) and told to the log followers.
    fn observed(
        &mut self,
        mut pod: Pod,
        statuses: Vec<ContainerStatus>,
        annotations: BTreeMap<String, String>,
        all_ended: bool,
    ) -> Pod {
        if all_ended {
            self.ends.ended.store(true, Ordering::SeqCst);
        }
        pod.metadata.annotations = Some(annotations);
        pod.status = Some(PodStatus {
            phase: Some(phase(&statuses).into()),
            container_statuses: Some(statuses),
            ..Default::default()
        });
        pod
    }

    /// Whether every container of the pod is a step (no sidecar, so no
    /// probe).
    fn steps_only(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().all(|c| c.name.starts_with("step-")))
    }

    /// The pod's images, each once.
    fn images(&self) -> Vec<String> {
        let mut images: Vec<String> = Vec::new();
        for c in self.pod.spec.iter().flat_map(|s| &s.containers) {
            if let Some(i) = c.image.as_ref().filter(|i| !images.contains(i)) {
                images.push(i.clone());
            }
        }
        images
    }

    /// The pod from what conmon recorded of each container's end (its exit
    /// file, seen by the container's log follower) rather than `podman
    /// inspect`, which waits behind podman's cleanup of each container that
    /// ended (0.1–1 s for twenty, on the way to the run's end). A container
    /// whose end was not seen runs: `podman kube play` started them all.
    /// Only a pod of steps, whose images' IDs are known, while every
    /// container's end is watched; else `None`, and podman is asked.
    fn observe_exits(&mut self) -> Option<Pod> {
        if !self.steps_only() {
            return None;
        }
        let exits = self.ends.exits.lock().ok()?.clone();
        let containers = self.pod.spec.as_ref().map_or(0, |s| s.containers.len());
        // Every end known, or the others running for sure.
        if exits.len() < containers && !self.ends.exits_watched.load(Ordering::SeqCst) {
            return None;
        }
        let image_ids = self.ends.image_ids.lock().ok()?.clone()?;
        let pod = self.pod.clone();
        let mut statuses = Vec::new();
        let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
        for (i, c) in pod.spec.iter().flat_map(|s| &s.containers).enumerate() {
            let image = c.image.clone().unwrap_or_default();
            let state = match exits.get(&format!("{}-{}", self.name, c.name)) {
                Some(exit) => terminated(exit.code, exit.oom, None, exit.finished.map(Time), None),
                None => ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                },
            };
            let ended = state.terminated.is_some();
            statuses.push(ContainerStatus {
                name: c.name.clone(),
                image_id: image_ids.get(&image)?.clone(),
                image,
                state: Some(state),
                ..Default::default()
            });
            self.reports.annotate(&mut annotations, i, &c.name, ended);
        }
        let all_ended = exits.len() == statuses.len();
        Some(self.observed(pod, statuses, annotations, all_ended))
    }

    /// Runs the probes due (see [`crate::probe`]) and sets each container's
    /// readiness from them, as a kubelet does.
    fn probe(
        &mut self,
        pod: &Pod,
        inspected: &[serde_json::Value],
        statuses: &mut [ContainerStatus],
        annotations: &mut BTreeMap<String, String>,
    ) {
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let address = pod_address(inspected, host_network);
        let running = |n: &str| {
            statuses
                .iter()
                .any(|s| s.name == n && s.state.as_ref().is_some_and(|x| x.running.is_some()))
        };
        let failed = self.probes.tick(&running, &address, Instant::now());
        kill_containers(&self.name, &failed);
        crate::probe::mark_statuses(&self.probes, statuses, annotations, self.ready_written);
    }

    /// Releases the first step once the sidecars are ready (the local
    /// stand-in for the `tekton.dev/ready` annotation).
    pub fn mark_ready(&mut self) {
        if let (Some(f), false) = (&self.ready_file, self.ready_written) {
            self.ready_written = write_ready(&self.run_dir, f);
        }
    }

    /// Whether the pod waits for its sidecars and has not been released.
    pub fn waits_for_ready(&self) -> bool {
        self.ready_file.is_some() && !self.ready_written
    }

    /// Stops every container (cancel, timeout): SIGTERM, which each step's
    /// wrapper passes on to its command, then SIGKILL after the grace
    /// period (`now`: at once).
    pub fn stop(&mut self, now: bool) {
        // podman takes whole seconds: a part of one counts as one.
        let grace = if now {
            0
        } else {
            self.grace.as_millis().div_ceil(1000)
        };
        let _ = Command::new("podman")
            .args(["pod", "stop", "--time", &grace.to_string(), &self.name])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.ends.stopped.store(true, Ordering::SeqCst);
    }

    /// Removes the pod (unless `keep`) and waits for the log followers.
    pub fn finish(mut self, keep: bool) {
        self.probes.stop();
        // Stop what still runs (sidecars, stopped at once as Tekton stops
        // them) so every log follower sees its container end and has read
        // all of its output before removal.
        let all_ended = self.ends.ended.load(Ordering::SeqCst);
        if all_ended {
            self.ends.stopped.store(true, Ordering::SeqCst);
        } else {
            self.stop(true);
        }
        for f in self.followers.drain(..) {
            let _ = f.join();
        }
        if !keep {
            if all_ended {
                self.wait_for_infra();
            }
            remove_pod(&self.name);
        }
        for f in self.followers.drain(..) {
            let _ = f.join();
        }
    }

    pub fn task_run(&self) -> &str {
        &self.task_run
    }
}

/// A podman container's `State` as a Kubernetes container state: exited
/// (with `OOMKilled`, `Completed` or `Error`), running, or waiting.
fn container_state(s: &serde_json::Value) -> ContainerState {
    let time = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .filter(|t| t.as_second() > 0)
            .map(Time)
    };
    match s["Status"].as_str().unwrap_or("") {
        "exited" | "stopped" => terminated(
            s["ExitCode"].as_i64().unwrap_or(0) as i32,
            s["OOMKilled"].as_bool() == Some(true),
            time(&s["StartedAt"]),
            time(&s["FinishedAt"]),
            s["Error"]
                .as_str()
                .filter(|e| !e.is_empty())
                .map(str::to_string),
        ),
        "running" => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(&s["StartedAt"]),
            }),
            ..Default::default()
        },
        other => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(
                    if other == "created" {
                        "ContainerCreating"
                    } else {
                        "Waiting"
                    }
                    .into(),
                ),
                message: None,
            }),
            ..Default::default()
        },
    }
}
