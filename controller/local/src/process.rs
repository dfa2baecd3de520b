//! The process runtime: the engine's pod run as host processes, for
//! machines without a container runtime.
//!
//! Every container of the pod (init containers first, one after another;
//! then steps and sidecars at once, ordered by the entrypoint's markers as
//! in a pod) becomes a process in private mount and PID namespaces, made by
//! the entrypoint's `container` helper with system calls
//! ([`tektite_entrypoint::container`]), where tmpfs mounts over `/tekton`,
//! `/workspace` and `/ko-app` receive the container's volume mounts (bind
//! mounts of the run directory's folders). So the pod's paths,
//! `/tekton/results/x` written literally included, mean the same thing as
//! in a container. The image is not used: commands run with this machine's
//! tools. This needs root on Linux; without it, paths are rewritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tektite_engine::podman;
use tektite_entrypoint::container;

use crate::live::Journal;
use crate::logs::{self, Sink};
use crate::procs::{self, ProcId};
use crate::runtime::{PodEnv, RuntimeError, Signal, spawn_in_session};

/// How long a container's output is read after all its processes are
/// gone (normally the pipes close at once).
const READERS_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The roots that get a tmpfs of their own in each process's namespace.
const ROOTS: &[&str] = &["/tekton", "/workspace", "/ko-app"];

/// How pod paths are made to work without containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As root: each process in a private mount namespace with the pod's
    /// mounts at the pod's paths.
    Namespace,
    /// Without root: paths under the pod's mounts in commands, args, env,
    /// working dirs and scripts are rewritten into the run directory.
    Rewrite,
}

/// The mode this machine allows (`TEKTITE_PROCESS_REWRITE=1` forces rewriting).
pub fn mode() -> Mode {
    static CAN_UNSHARE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let forced = std::env::var_os("TEKTITE_PROCESS_REWRITE").is_some_and(|v| v == "1");
    if forced || !nix::unistd::Uid::effective().is_root() {
        return Mode::Rewrite;
    }
    // Root in a container without CAP_SYS_ADMIN cannot make namespaces: the
    // entrypoint makes empty ones once, as it would for a container.
    let can = *CAN_UNSHARE.get_or_init(|| {
        let Ok(entrypoint) = entrypoint_binary() else {
            return false;
        };
        let spec = container::Spec {
            namespace: Some(container::Namespace {
                working_dir: "/".into(),
                ..Default::default()
            }),
        };
        let check = ["/proc/self/exe".to_string(), "container-ok".into()];
        container::args(&spec, &check).is_ok_and(|args| {
            Command::new(entrypoint)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    });
    if can { Mode::Namespace } else { Mode::Rewrite }
}

/// Starts finding out [`mode`] in a thread of its own (its check starts a
/// process and makes namespaces), so that it overlaps with reading and
/// checking the run's files.
pub fn warm_up() {
    std::thread::spawn(mode);
}

/// What the rewrite mode cannot do, for the user to read.
pub const REWRITE_LIMITS: &str = "no mount namespace (not root, or not allowed): paths under /tekton and /workspace \
    written in commands, args, env, working dirs and scripts are rewritten into the run directory; \
    a path put together at run time (from pieces, or read from a file) is not, and will not be found";

/// Whether this machine can run pods as processes, or why not. The
/// entrypoint does the rest (sessions, namespaces and mounts).
pub fn available() -> Result<(), String> {
    if !procs::available() {
        return Err("/proc is not mounted".into());
    }
    Ok(())
}

/// The entrypoint binary for the process runtime: `TEKTITE_ENTRYPOINT`, else
/// `entrypoint` beside this executable, else the static build of the
/// target directory this executable is in.
pub fn entrypoint_binary() -> Result<PathBuf, String> {
    entrypoint_candidates().into_iter().next().ok_or_else(|| {
        "no entrypoint binary: build it (hack/build-entrypoint.sh) or set TEKTITE_ENTRYPOINT".into()
    })
}

/// The entrypoint binaries there are, in [`entrypoint_binary`]'s order
/// (`TEKTITE_ENTRYPOINT` alone when it is set).
pub fn entrypoint_candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("TEKTITE_ENTRYPOINT") {
        return vec![PathBuf::from(p)];
    }
    // Only beside this executable, in the tree it was built in: never a
    // path of the current directory, which anyone may have made.
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("entrypoint"));
        // tkt in target/<profile>/ of a cargo target directory (it says so
        // with CACHEDIR.TAG; not any folder one level up): the static build
        // target/<triple>/entrypoint/entrypoint.
        if let Some(up) = dir.parent().filter(|up| up.join("CACHEDIR.TAG").is_file()) {
            candidates.extend(
                std::fs::read_dir(up)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path().join("entrypoint/entrypoint")),
            );
        }
    }
    candidates.retain(|p| p.is_file());
    candidates
}

#[derive(Debug, Default)]
struct ProcState {
    started: Option<Timestamp>,
    finished: Option<Timestamp>,
    code: Option<i32>,
    /// The container's first process, leader of its session.
    root: Option<ProcId>,
}

/// A pod run as host processes.
#[derive(Debug)]
pub struct ProcessPod {
    pod: Pod,
    run_dir: PathBuf,
    /// Where the steps' run directories are (they depend on the mode).
    tree: bool,
    ready_file: Option<PathBuf>,
    ready_written: bool,
    /// The readiness and startup probes of its containers.
    probes: crate::probe::Probes,
    grace: std::time::Duration,
    procs: Vec<(String, Arc<Mutex<ProcState>>)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Opens when the last step started so far has ended and its output
    /// has been read: the next step's output waits for it.
    last_step: Option<Arc<Ended>>,
    reports: crate::runtime::StepReports,
}

/// Opens once a container has ended and its output has been read (or its
/// readers given up on): steps run one after another, and the output of
/// each reaches the user after the output of the one before.
#[derive(Debug, Default)]
struct Ended {
    done: Mutex<bool>,
    cond: std::sync::Condvar,
}

impl Ended {
    fn open(&self) {
        if let Ok(mut d) = self.done.lock() {
            *d = true;
        }
        self.cond.notify_all();
    }

    fn wait(&self) {
        let Ok(mut d) = self.done.lock() else { return };
        while !*d {
            match self.cond.wait(d) {
                Ok(g) => d = g,
                Err(_) => return,
            }
        }
    }
}

fn err(what: impl Into<String>, message: impl Into<String>) -> RuntimeError {
    RuntimeError {
        what: what.into(),
        message: message.into(),
    }
}

/// The namespace of one container: a tmpfs on each root, the entrypoint
/// binary at `/ko-app/entrypoint`, then the volume mounts, parents before
/// children, as a kubelet mounts them (`/workspace` before
/// `/workspace/source`).
fn namespace_of(
    c: &Container,
    volumes: &BTreeMap<String, PathBuf>,
    entrypoint: &Path,
) -> container::Namespace {
    let mut mounts = vec![container::Mount {
        host: entrypoint.to_path_buf(),
        path: "/ko-app/entrypoint".into(),
        read_only: false,
    }];
    let mut declared: Vec<_> = c.volume_mounts.iter().flatten().collect();
    declared.sort_by_key(|m| Path::new(&m.mount_path).components().count());
    // subPaths were resolved beneath their volumes into volumes of their
    // own (`runtime::subpath_volumes`).
    mounts.extend(declared.into_iter().filter_map(|m| {
        Some(container::Mount {
            host: volumes.get(&m.name)?.clone(),
            path: m.mount_path.clone(),
            read_only: m.read_only == Some(true),
        })
    }));
    container::Namespace {
        tmpfs: ROOTS.iter().map(|r| r.to_string()).collect(),
        mounts,
        // An empty workingDir is the image's default, as on a kubelet.
        working_dir: c
            .working_dir
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".into()),
    }
}

/// `(pod path, host path)` pairs for one container in rewrite mode,
/// longest pod path first: claims and host directories as themselves, the
/// rest as a tree under `fs_root` (so `/tekton/run/0` is
/// `<fs_root>/tekton/run/0` for every container, as the entrypoint expects).
fn rewrite_table(
    c: &Container,
    volumes: &BTreeMap<String, PathBuf>,
    run_dir: &Path,
    fs_root: &Path,
    entrypoint: &Path,
) -> Vec<(String, PathBuf)> {
    let mut t: Vec<(String, PathBuf)> = vec![
        ("/ko-app/entrypoint".into(), entrypoint.to_path_buf()),
        ("/tekton".into(), fs_root.join("tekton")),
        ("/workspace".into(), fs_root.join("workspace")),
    ];
    for m in c.volume_mounts.iter().flatten() {
        let pod_path = m.mount_path.trim_end_matches('/').to_string();
        let inside = fs_root.join(pod_path.trim_start_matches('/'));
        let host = match volumes.get(&m.name) {
            Some(h) if !h.starts_with(run_dir) => h.clone(),
            _ => inside,
        };
        t.retain(|(p, _)| *p != pod_path);
        t.push((pod_path, host));
    }
    t.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    t
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '~' | '+' | '@')
}

/// Replaces each pod path of `table` that starts a path in `s` (not inside
/// a longer word) by its host path.
fn rewrite(s: &str, table: &[(String, PathBuf)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    'scan: while i < s.len() {
        let prev_ok = !s[..i].chars().next_back().is_some_and(is_path_char);
        if s.as_bytes()[i] == b'/' && prev_ok {
            for (pod, host) in table {
                if let Some(rest) = s[i..].strip_prefix(pod.as_str())
                    && (rest.starts_with('/') || !rest.chars().next().is_some_and(is_path_char))
                {
                    out.push_str(&host.to_string_lossy());
                    i += pod.len();
                    continue 'scan;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Rewrites the text `place-scripts` runs, when it is the engine's: its
/// own paths (each script file, the entrypoint) with `own`, and each script
/// rewritten with the table of the container that runs it.
fn rewrite_place_scripts(
    text: &str,
    own: &[(String, PathBuf)],
    tables: &BTreeMap<String, Vec<(String, PathBuf)>>,
) -> Option<String> {
    let scripts: Vec<(String, Vec<u8>)> = tektite_engine::pod::placed_scripts(text)?
        .into_iter()
        .map(|(file, bytes)| {
            let text = match (String::from_utf8(bytes), tables.get(&file)) {
                (Ok(script), Some(t)) => rewrite(&script, t).into_bytes(),
                (Ok(script), None) => script.into_bytes(),
                (Err(e), _) => e.into_bytes(),
            };
            (rewrite(&file, own), text)
        })
        .collect();
    let entrypoint = rewrite(tektite_entrypoint::contract::ENTRYPOINT, own);
    Some(tektite_engine::pod::scripts_text(&scripts, &entrypoint))
}

fn command_of(c: &Container) -> Vec<String> {
    let mut v = c.command.clone().unwrap_or_default();
    v.extend(c.args.clone().unwrap_or_default());
    v
}

/// The host directory of each hostPath volume of the adapted pod (made
/// by `runtime::make_volume_dirs`, or the user's own).
fn host_volumes(adapted: &Pod) -> BTreeMap<String, PathBuf> {
    adapted
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| Some((v.name.clone(), PathBuf::from(&v.host_path.as_ref()?.path))))
        .collect()
}

/// What every container starts with before the pod's own env: what a
/// container runtime and image would give (`PATH`, `HOME`, `HOSTNAME`,
/// here this machine's, for its tools), the conventions that say where
/// this user's tools, locale and certificates are, and the entrypoint's
/// own tuning. No credentials, sockets or proxies (which may carry a
/// password): `tkt run --env NAME` hands over anything else.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "GOPATH",
    "GOROOT",
    "JAVA_HOME",
    "TEKTITE_ENTRYPOINT_POLL_MS",
];

fn base_env(pod_name: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = INHERITED_ENV
        .iter()
        .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    env.push(("HOSTNAME".into(), pod_name.to_string()));
    env
}

/// How each container's command is made to run here: the mount namespace's
/// setup, or the path tables of the rewrite mode.
struct Launcher<'a> {
    mode: Mode,
    pod_name: String,
    volumes: BTreeMap<String, PathBuf>,
    entrypoint: &'a Path,
    fs_root: PathBuf,
    /// Rewrite mode: each container's table, and the table of the container
    /// that runs each script.
    tables: BTreeMap<String, Vec<(String, PathBuf)>>,
    script_tables: BTreeMap<String, Vec<(String, PathBuf)>>,
}

impl<'a> Launcher<'a> {
    fn new(
        pod_name: &str,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        volumes: BTreeMap<String, PathBuf>,
        run_dir: &Path,
        entrypoint: &'a Path,
    ) -> Result<Launcher<'a>, RuntimeError> {
        let mode = mode();
        let fs_root = run_dir.join("fs");
        let mut l = Launcher {
            mode,
            pod_name: pod_name.to_string(),
            volumes,
            entrypoint,
            fs_root,
            tables: BTreeMap::new(),
            script_tables: BTreeMap::new(),
        };
        if mode == Mode::Namespace {
            for r in ROOTS {
                std::fs::create_dir_all(r)
                    .map_err(|e| err(format!("mount point {r}"), e.to_string()))?;
            }
            let hidden = l
                .volumes
                .values()
                .map(PathBuf::as_path)
                .chain([entrypoint])
                .find(|p| ROOTS.iter().any(|r| p.starts_with(r)));
            if let Some(p) = hidden {
                return Err(err(
                    format!("{}", p.display()),
                    "lies under /tekton, /workspace or /ko-app, which the mount namespace covers: \
                     keep the state directory, workspaces and entrypoint elsewhere",
                ));
            }
            return Ok(l);
        }
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
        {
            let t = rewrite_table(c, &l.volumes, run_dir, &l.fs_root, entrypoint);
            for (pod_path, host) in &t {
                if !pod_path.starts_with("/ko-app") && host.starts_with(&l.fs_root) {
                    let _ = std::fs::create_dir_all(host);
                }
            }
            for word in command_of(c) {
                if word.starts_with(tektite_entrypoint::contract::SCRIPTS_DIR) {
                    l.script_tables.insert(word, t.clone());
                }
            }
            l.tables.insert(c.name.clone(), t);
        }
        Ok(l)
    }

    /// The program and arguments that run container `c` here: the
    /// entrypoint's `container` helper (a session of its own, ended with
    /// this `tkt` thread; as root, private mount and PID namespaces with the
    /// pod's mounts, see [`container`]) around the container's command.
    fn words(&self, c: &Container) -> Vec<String> {
        let (spec, command) = if self.mode == Mode::Namespace {
            let ns = namespace_of(c, &self.volumes, self.entrypoint);
            let spec = container::Spec {
                namespace: Some(ns),
            };
            (spec, command_of(c))
        } else {
            (container::Spec::default(), self.rewritten_command(c))
        };
        let mut words = vec![self.entrypoint.to_string_lossy().into_owned()];
        // A spec is plain data: it is always written.
        words.extend(container::args(&spec, &command).unwrap_or_default());
        words
    }

    /// Rewrite mode: container `c`'s command with its paths rewritten.
    fn rewritten_command(&self, c: &Container) -> Vec<String> {
        let t = self.tables.get(&c.name).cloned().unwrap_or_default();
        let original = command_of(c);
        let mut words: Vec<String> = original.iter().map(|w| rewrite(w, &t)).collect();
        if c.name == "place-scripts"
            && let Some(text) = original.get(1..).and_then(tektite_engine::pod::shell_text)
            && let Some(placed) = rewrite_place_scripts(&text, &t, &self.script_tables)
        {
            words.truncate(1);
            words.extend(tektite_engine::pod::shell_args(placed));
        }
        // The wrapper reads results from a default path: name it.
        if original.first().map(String::as_str) == Some(tektite_entrypoint::contract::ENTRYPOINT) {
            let results = rewrite(tektite_entrypoint::contract::RESULTS_DIR, &t);
            words.splice(1..1, ["-results_dir".to_string(), results]);
        }
        words
    }

    /// The command that starts container `c`: in a session of its own (so
    /// everything it starts can be found and stopped, whatever it does to
    /// its process groups) and killed if this `tkt` thread dies.
    fn command(&self, c: &Container) -> Command {
        let env: Vec<(String, String)> = c
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect();
        let words = self.words(c);
        let mut cmd = Command::new(words.first().map_or("", String::as_str));
        cmd.args(words.iter().skip(1));
        // Only what the pod defines, as in a container: nothing of the
        // calling shell (tokens, agent sockets) reaches a step.
        cmd.env_clear().envs(base_env(&self.pod_name));
        if self.mode == Mode::Namespace {
            cmd.envs(env);
        } else {
            let t = self.tables.get(&c.name).cloned().unwrap_or_default();
            let wd = rewrite(
                c.working_dir
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .unwrap_or("/"),
                &t,
            );
            let _ = std::fs::create_dir_all(&wd);
            cmd.envs(env.into_iter().map(|(k, v)| (k, rewrite(&v, &t))))
                .env(
                    tektite_entrypoint::contract::ROOT_ENV,
                    self.fs_root.join("tekton"),
                )
                .current_dir(wd);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts container `c`, recording its session in the run's journal.
    fn spawn(
        &self,
        c: &Container,
        journal: Option<&Journal>,
    ) -> Result<(std::process::Child, Option<ProcId>), RuntimeError> {
        spawn_in_session(
            &mut self.command(c),
            &format!("container {}", c.name),
            journal,
            self.mode == Mode::Rewrite,
        )
    }
}

impl ProcessPod {
    /// Prepares the run directory, runs the init containers, then starts
    /// every container.
    ///
    /// # Errors
    /// A directory cannot be made, or an init container fails.
    pub fn start(
        pod: &Pod,
        env: &PodEnv<'_>,
        entrypoint: &Path,
    ) -> Result<ProcessPod, RuntimeError> {
        // Rewrite mode keeps its volumes in its file tree.
        let namespace = mode() == Mode::Namespace;
        let fast_dir = if namespace { env.fast_dir } else { env.run_dir };
        let dirs = podman::HostDirs {
            fast: fast_dir,
            ..env.host_dirs()
        };
        let mut adapted = podman::adapt(pod, dirs, env.claims);
        if namespace {
            crate::prepare::merge_run_volumes(&mut adapted, fast_dir);
        }
        crate::runtime::make_volume_dirs(&adapted.dirs, env)?;
        if let Some(spec) = adapted.pod.spec.as_mut() {
            crate::runtime::subpath_volumes(spec, env)?;
            // Rewrite mode keeps it: its paths are rewritten per container.
            if namespace {
                crate::prepare::on_host(spec, &[env.run_dir, fast_dir], entrypoint)?;
            }
        }
        let volumes = host_volumes(&adapted.pod);
        let spec = adapted.pod.spec.clone().unwrap_or_default();
        let launcher = Launcher::new(
            pod.metadata.name.as_deref().unwrap_or_default(),
            &spec,
            volumes,
            env.run_dir,
            entrypoint,
        )?;
        for c in spec.init_containers.iter().flatten() {
            run_init(&launcher, c, env.journal)?;
        }
        let tree = launcher.mode == Mode::Rewrite;
        let mut p = ProcessPod {
            pod: pod.clone(),
            run_dir: env.run_dir.to_path_buf(),
            tree,
            // In rewrite mode the first step waits on the tree's ready file.
            ready_file: match (&adapted.ready_file, tree) {
                (Some(_), true) => Some(launcher.fs_root.join("tekton/downward/ready")),
                (f, _) => f.clone(),
            },
            ready_written: false,
            probes: crate::probe::Probes::new(
                &spec.containers,
                Arc::new(HostExec::new(&launcher, &spec.containers)),
            ),
            grace: env.grace,
            procs: Vec::new(),
            threads: Vec::new(),
            last_step: None,
            reports: crate::runtime::StepReports::new(fast_dir, tree),
        };
        for c in &spec.containers {
            if let Err(e) = p.start_container(&launcher, c, env) {
                p.finish();
                return Err(e);
            }
        }
        Ok(p)
    }

    /// Starts one container: its output pumped into the store and to the
    /// runner, a thread waiting for it to end.
    fn start_container(
        &mut self,
        launcher: &Launcher<'_>,
        c: &Container,
        env: &PodEnv<'_>,
    ) -> Result<(), RuntimeError> {
        if c.command.as_ref().is_none_or(Vec::is_empty) {
            return Err(err(
                format!("container {}", c.name),
                "no command: the process runtime does not use images and cannot read their entrypoint",
            ));
        }
        let log = env
            .store
            .open_log(env.task_run, &c.name)
            .map_err(|e| err("log", e.to_string()))?;
        let sink = Sink::new(log, env.signals.clone(), env.task_run, &c.name);
        let sink = Arc::new(sink.masking(env.store.mask()));
        let (mut child, root) = launcher.spawn(c, env.journal)?;
        let state = Arc::new(Mutex::new(ProcState {
            started: Some(Timestamp::now()),
            root,
            ..ProcState::default()
        }));
        // A step's output waits for the step before it to be read to its
        // end; the pipe holds what it writes meanwhile (it starts only
        // once that step has ended).
        let ended = Arc::new(Ended::default());
        let after = if c.name.starts_with("step-") {
            self.last_step.replace(ended.clone())
        } else {
            None
        };
        // One thread reads both pipes, and says when it is done (a channel,
        // not a poll: the steps' output is passed on one after another, so
        // a poll's period would be paid once per step).
        let mut reader = None;
        if let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) {
            let (sink, after) = (sink.clone(), after.clone());
            let (done, read) = std::sync::mpsc::channel::<()>();
            let handle = std::thread::spawn(move || {
                if let Some(before) = after {
                    before.wait();
                }
                logs::pump_pair(out, err, &sink);
                let _ = done.send(());
            });
            reader = Some((handle, read));
        }
        let (st, tx) = (state.clone(), env.signals.clone());
        let leader_last = self.tree;
        self.threads.push(std::thread::spawn(move || {
            let status = child.wait();
            // As when a container ends: what it left behind goes too, so
            // its output pipes close. (In namespaces the kernel has done it:
            // the helper ends after its namespace's PID 1, and everything
            // else in the namespace ends with that.)
            if let (Some(r), true) = (root, leader_last) {
                procs::kill_session(r.pid, r.start, leader_last);
            }
            // A process that left the session and outlived its wrapper
            // (rewrite mode only) may hold the pipes open: not waited for
            // past a moment, so the run ends.
            if let Some((handle, read)) = reader {
                // Sent at its end, or dropped if it panicked: joined then.
                match read.recv_timeout(READERS_GRACE) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => drop(handle.join()),
                }
            }
            ended.open();
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
        self.procs.push((c.name.clone(), state));
        Ok(())
    }

    /// The pod with a status built from the processes and step reports.
    pub fn observe(&mut self) -> Pod {
        let mut pod = self.pod.clone();
        let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let mut statuses = Vec::new();
        let procs = self.procs.clone();
        for (i, (name, state)) in procs.iter().enumerate() {
            let s = state
                .lock()
                .map(|s| (s.started, s.finished, s.code))
                .unwrap_or_default();
            let st = match s {
                (started, Some(finished), Some(code)) => crate::runtime::terminated(
                    code,
                    false,
                    started.map(Time),
                    Some(Time(finished)),
                    None,
                ),
                (started, _, _) => ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: started.map(Time),
                    }),
                    ..Default::default()
                },
            };
            statuses.push(ContainerStatus {
                name: name.clone(),
                state: Some(st),
                ..Default::default()
            });
            self.reports
                .annotate(&mut annotations, i, name, s.1.is_some());
        }
        self.probe(&mut statuses, &mut annotations);
        pod.metadata.annotations = Some(annotations);
        pod.status = Some(PodStatus {
            phase: Some(crate::runtime::phase(&statuses).into()),
            container_statuses: Some(statuses),
            ..Default::default()
        });
        pod
    }

    /// Runs the probes due (see [`crate::probe`]; tcpSocket and httpGet
    /// connect to this machine, whose network the pod shares) and sets each
    /// container's readiness from them, as a kubelet does.
    fn probe(
        &mut self,
        statuses: &mut [ContainerStatus],
        annotations: &mut BTreeMap<String, String>,
    ) {
        let running = |n: &str| {
            statuses
                .iter()
                .any(|s| s.name == n && s.state.as_ref().is_some_and(|x| x.running.is_some()))
        };
        let address = Ok("127.0.0.1".to_string());
        let failed = self
            .probes
            .tick(&running, &address, std::time::Instant::now());
        for (name, state) in &self.procs {
            let root = state
                .lock()
                .ok()
                .filter(|s| s.code.is_none())
                .and_then(|s| s.root);
            if let (true, Some(r)) = (failed.contains(name), root) {
                procs::kill_session(r.pid, r.start, self.tree);
            }
        }
        crate::probe::mark_statuses(&self.probes, statuses, annotations, self.ready_written);
    }

    /// Releases the first step once the sidecars are ready.
    pub fn mark_ready(&mut self) {
        if let (Some(f), false) = (&self.ready_file, self.ready_written) {
            self.ready_written = crate::runtime::write_ready(&self.run_dir, f);
        }
    }

    pub fn waits_for_ready(&self) -> bool {
        self.ready_file.is_some() && !self.ready_written
    }

    /// The sessions of the containers that still run.
    fn running(&self) -> Vec<ProcId> {
        self.procs
            .iter()
            .filter_map(|(_, s)| s.lock().ok().filter(|s| s.code.is_none())?.root)
            .collect()
    }

    /// Stops every container that still runs, as a kubelet stops a pod:
    /// SIGTERM to each container's first process (the step wrapper passes
    /// it on to its command), then, after the grace period (`now`: at once),
    /// SIGKILL to every process of each container's session.
    pub fn stop(&mut self, now: bool) {
        let running = self.running();
        if running.is_empty() {
            return;
        }
        if !now {
            for r in &running {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(r.pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let start = std::time::Instant::now();
            while start.elapsed() < self.grace && !self.running().is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        for r in self.running() {
            procs::kill_session(r.pid, r.start, self.tree);
        }
    }

    /// Stops what still runs (sidecars, at once, as Tekton stops them) and
    /// waits for every process.
    pub fn finish(mut self) {
        self.probes.stop();
        self.stop(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How an exec probe's command runs as a host process: as its container
/// would run it (the container's mounts in a namespace of its own, or its
/// paths rewritten; its environment and working directory), made once per
/// probe command when the pod starts.
#[derive(Debug, Default)]
struct HostExec {
    /// (container, command) → the program, arguments, environment and
    /// working directory that run it.
    recipes: BTreeMap<(String, Vec<String>), Recipe>,
}

#[derive(Debug, Clone)]
struct Recipe {
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    dir: Option<PathBuf>,
}

impl HostExec {
    /// The recipe of every exec probe of `containers`.
    fn new(launcher: &Launcher<'_>, containers: &[Container]) -> HostExec {
        let mut recipes = BTreeMap::new();
        for c in containers {
            let probes = [&c.readiness_probe, &c.startup_probe];
            for argv in probes
                .into_iter()
                .flatten()
                .filter_map(|p| p.exec.as_ref()?.command.clone())
                .filter(|a| !a.is_empty())
            {
                let probe = Container {
                    command: Some(argv.clone()),
                    args: None,
                    ..c.clone()
                };
                let cmd = launcher.command(&probe);
                let recipe = Recipe {
                    program: cmd.get_program().to_owned(),
                    args: cmd.get_args().map(|a| a.to_owned()).collect(),
                    env: cmd
                        .get_envs()
                        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
                        .collect(),
                    dir: cmd.get_current_dir().map(Path::to_path_buf),
                };
                recipes.insert((c.name.clone(), argv), recipe);
            }
        }
        HostExec { recipes }
    }
}

impl crate::probe::ExecIn for HostExec {
    fn command(&self, container: &str, argv: &[String]) -> Option<Command> {
        let r = self.recipes.get(&(container.to_string(), argv.to_vec()))?;
        let mut cmd = Command::new(&r.program);
        cmd.args(&r.args).env_clear().envs(r.env.iter().cloned());
        if let Some(d) = &r.dir {
            cmd.current_dir(d);
        }
        Some(cmd)
    }
}

/// Runs an init container to its end; its output is kept for the error.
fn run_init(
    launcher: &Launcher<'_>,
    c: &Container,
    journal: Option<&Journal>,
) -> Result<(), RuntimeError> {
    let (child, _) = launcher.spawn(c, journal)?;
    let out = child
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rewritten_only_where_they_start_a_path() {
        let t = vec![
            ("/workspace/src".to_string(), PathBuf::from("/host/claim")),
            ("/tekton".to_string(), PathBuf::from("/run/fs/tekton")),
            ("/workspace".to_string(), PathBuf::from("/run/fs/workspace")),
        ];
        assert_eq!(
            rewrite(
                "cat /tekton/results/x > \"/workspace/src/a\"; ls /workspace",
                &t
            ),
            "cat /run/fs/tekton/results/x > \"/host/claim/a\"; ls /run/fs/workspace"
        );
        assert_eq!(
            rewrite("/tektonx /a/tekton x/tekton --out=/tekton/r", &t),
            "/tektonx /a/tekton x/tekton --out=/run/fs/tekton/r"
        );
    }
}
