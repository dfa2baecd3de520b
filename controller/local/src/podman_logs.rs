//! Where a played pod's containers keep their output, following it, and
//! how each container ended.
//!
//! podman's `k8s-file` driver writes each container's output to a file that
//! its conmon alone writes. The file is complete once conmon has written
//! the container's exit file (it does as soon as the output is drained,
//! then stays for podman's cleanup) or has gone. [`sources`] finds each
//! file, conmon and exit file without asking podman about every container:
//! `podman inspect` of twenty containers while they start and end waits on
//! each one's lock behind podman's own cleanups (1–2 s on two cores, beside
//! the steps), where the places follow from the IDs `podman kube play`
//! printed and one inspection of the pod's infra container. The exits the
//! followers see ([`PodEnds`]) let a pod of steps be observed without
//! `podman inspect`.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::logs::Sink;
use crate::procs::ProcId;
use crate::runtime::{RuntimeError, output};

/// Where podman keeps a container's output, and who writes it.
pub(crate) struct LogSource {
    /// The container's log file (`k8s-file` driver: CRI lines).
    path: PathBuf,
    /// The container's conmon, the file's only writer: once it is gone
    /// the file is complete.
    conmon: Option<ProcId>,
    /// The container had already ended when it was looked up (podman says
    /// so once conmon has written its exit, after the last of its output):
    /// the file is complete now.
    ended: bool,
    /// Where conmon writes the container's exit status, which it does as
    /// soon as the output is drained (then it waits for podman's cleanup,
    /// a second or more, before it goes): once there, the file is
    /// complete.
    exit_file: Option<PathBuf>,
    /// The file conmon leaves beside the container's bundle when the
    /// kernel killed it for memory.
    oom_file: Option<PathBuf>,
    /// The container was not started yet when it was looked up: its
    /// conmon's pid file and its ID, for [`LogSource::started`].
    pending: Option<(PathBuf, String)>,
}

impl LogSource {
    /// This source once its container has started (when it was looked up
    /// before): its conmon and exit file, once the pid file is there; and
    /// once its log file is there, which conmon makes just after its pid
    /// file (not waited for past conmon's end or the pod's stop). A
    /// container whose start is over without it never started; one whose
    /// conmon is not its own cannot be followed here (`None`).
    pub(crate) fn started(mut self, full_name: &str, ends: &PodEnds) -> Option<LogSource> {
        let stopped = || ends.stopped.load(Ordering::SeqCst);
        if let Some((pidfile, id)) = self.pending.take() {
            loop {
                // Read before looking: a start over by then has started it.
                let starting = ends.starting.load(Ordering::SeqCst) && !stopped();
                match conmon_of(&pidfile, &id, full_name) {
                    Conmon::Runs(p, exit_dir) => {
                        self.conmon = Some(p);
                        self.exit_file = exit_dir.map(|d| d.join(&id));
                        break;
                    }
                    Conmon::Gone => {
                        self.ended = true;
                        return Some(self);
                    }
                    Conmon::NotStarted if !starting => {
                        self.ended = true;
                        return Some(self);
                    }
                    Conmon::Unknown => return None,
                    Conmon::NotStarted => {}
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        while let Some(c) = &self.conmon
            && !self.path.exists()
            && c.alive()
            && !stopped()
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(self)
    }
}

/// The states in which a container may still write output.
const LIVE_STATES: &[&str] = &[
    "running",
    "created",
    "initialized",
    "configured",
    "paused",
    "stopping",
];

/// The log file and conmon of each container of a played pod, asked of
/// podman for each: the way when [`sources`] cannot tell.
pub(crate) fn inspected_sources(
    full_names: &[String],
) -> Result<BTreeMap<String, LogSource>, RuntimeError> {
    Ok(inspect(full_names)?
        .lines()
        .filter_map(log_source)
        .collect())
}

/// One line of an inspection by [`INSPECT_FORMAT`].
fn log_source(line: &str) -> Option<(String, LogSource)> {
    let mut f = line.split('\t');
    let (name, status, pid, path) = (f.next()?, f.next()?, f.next()?, f.next()?);
    let (id, pidfile) = (f.next(), f.next());
    let conmon = pid.parse::<i32>().ok().filter(|p| *p > 0);
    // Made but not started yet (`tkt` may be starting it): its conmon is
    // looked for once it is ([`LogSource::started`]).
    let pending = match (conmon, id, pidfile) {
        (None, Some(id), Some(pidfile)) if status == "created" && is_id(id) => {
            Some((PathBuf::from(pidfile), id.to_string()))
        }
        _ => None,
    };
    Some((
        name.to_string(),
        LogSource {
            path: PathBuf::from(path),
            conmon: conmon.and_then(ProcId::of),
            ended: !LIVE_STATES.contains(&status),
            exit_file: None,
            oom_file: None,
            pending,
        },
    ))
}

/// Decodes complete CRI log lines (`<time> <stream> <F|P> <content>`) from
/// the front of `buf` into `out`, removing them; a partial last line stays.
/// `F` ends a line (a newline is added), `P` is part of one.
fn decode_cri(buf: &mut Vec<u8>, out: &mut Vec<u8>) {
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return;
    };
    for record in buf[..end].split(|b| *b == b'\n') {
        let mut fields = record.splitn(4, |b| *b == b' ');
        let (_time, _stream, tag) = (fields.next(), fields.next(), fields.next());
        let content = fields.next().unwrap_or_default();
        out.extend_from_slice(content);
        if tag.is_some_and(|t| !t.starts_with(b"P")) {
            out.push(b'\n');
        }
    }
    buf.drain(..=end);
}

/// Follows one container's log file to its end into `sink`: read as it
/// grows, and once its writer is gone, read to the end. (`podman logs
/// --follow` stops early when a container exits right after printing a
/// lot, which lost the tail of a step's output.)
pub(crate) fn follow_log(source: Option<LogSource>, full_name: &str, ends: &PodEnds, sink: &Sink) {
    let opened = source.and_then(|s| Some((std::fs::File::open(&s.path).ok()?, s)));
    let Some((mut file, source)) = opened else {
        // Where podman keeps it is unknown: all of it, once it has ended
        // (which is then podman's to tell).
        ends.exits_watched.store(false, Ordering::SeqCst);
        logs_when_ended(full_name, ends, sink);
        return;
    };
    let mut recorded = false;
    let mut stream = sink.stream();
    let mut raw = Vec::new();
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // Without a writer to watch, podman is asked at the first end of the
    // file, then every half second.
    let mut last_check: Option<Instant> = None;
    let mut stopped_at: Option<Instant> = None;
    loop {
        let n = file.read(&mut chunk).unwrap_or(0);
        if n > 0 {
            raw.extend_from_slice(&chunk[..n]);
            decode_cri(&mut raw, &mut text);
            stream.push(&text);
            text.clear();
            continue;
        }
        // At the end for now: done once the writer is.
        let exit = source
            .exit_file
            .as_deref()
            .and_then(|f| read_exit(f, source.oom_file.as_deref()));
        let exited = exit.is_some();
        if let (Some(e), Ok(mut exits)) = (exit, ends.exits.lock()) {
            exits.insert(full_name.to_string(), e);
            recorded = true;
        }
        let writer_gone = match source.conmon {
            _ if source.ended || ends.ended.load(Ordering::SeqCst) || exited => true,
            Some(c) => !c.alive(),
            None if last_check.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) => {
                last_check = Some(Instant::now());
                !container_running(full_name)
            }
            None => false,
        };
        if ends.stopped.load(Ordering::SeqCst) {
            // A writer that outlives its stopped container by long is not
            // waited for forever.
            let since = *stopped_at.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        if writer_gone {
            // Whatever it wrote before going is in the file now.
            while let Ok(n) = file.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&chunk[..n]);
            }
            raw.push(b'\n');
            decode_cri(&mut raw, &mut text);
            stream.push(&text);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stream.finish();
    if !recorded {
        // Its end was not seen (podman's cleanup took the exit file
        // first): the pod's ends are podman's to tell.
        ends.exits_watched.store(false, Ordering::SeqCst);
    }
}

/// A container's whole output from `podman logs` once it has ended: the
/// way to lose nothing when its log file cannot be followed.
fn logs_when_ended(full_name: &str, ends: &PodEnds, sink: &Sink) {
    while !ends.stopped.load(Ordering::SeqCst)
        && !ends.ended.load(Ordering::SeqCst)
        && container_running(full_name)
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    let Ok(mut child) = Command::new("sh")
        .args(["-c", "exec podman logs \"$1\" 2>&1", "sh", full_name])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return;
    };
    if let Some(out) = child.stdout.take() {
        crate::logs::pump(out, sink);
    }
    let _ = child.wait();
}

/// Whether podman says the container still runs (or is about to).
fn container_running(full_name: &str) -> bool {
    Command::new("podman")
        .args(["inspect", "--format", "{{.State.Status}}", full_name])
        .process_group(0)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success() && LIVE_STATES.contains(&String::from_utf8_lossy(&o.stdout).trim())
        })
}

/// How a pod ended, as its log followers need to know.
#[derive(Debug, Default)]
pub(crate) struct PodEnds {
    /// The pod has been stopped: a writer is not waited for past a moment.
    pub stopped: AtomicBool,
    /// `tkt` is starting the pod's containers: one without a conmon yet
    /// is about to have one.
    pub starting: AtomicBool,
    /// podman has said every container ended (which it says once each
    /// conmon has written the exit, after the last of the output): every
    /// file is complete, whether or not its conmon has gone yet (it stays
    /// for podman's cleanup).
    pub ended: AtomicBool,
    /// How each container (by full name) ended, as conmon recorded it, for
    /// those whose end its follower saw.
    pub exits: Mutex<BTreeMap<String, Exit>>,
    /// Every container's exit file is known and no follower has missed
    /// one: a container not in `exits` has not ended.
    pub exits_watched: AtomicBool,
    /// The ID of each image of the pod, once looked up.
    pub image_ids: Mutex<Option<BTreeMap<String, String>>>,
}

/// How a container ended, from conmon's exit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exit {
    pub code: i32,
    /// Killed by the kernel for memory.
    pub oom: bool,
    /// When conmon wrote the exit (the file's time).
    pub finished: Option<k8s_openapi::jiff::Timestamp>,
}

/// Records the exit codes `podman wait` printed for `full_names` (one line
/// each, in order) of the containers whose end no follower saw. A 137 is
/// not recorded: whether the kernel killed it for memory is podman's to
/// tell.
pub(crate) fn record_waited(ends: &PodEnds, full_names: &[String], printed: &str) {
    let codes: Vec<i32> = printed
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if codes.len() != full_names.len() {
        return;
    }
    let Ok(mut exits) = ends.exits.lock() else {
        return;
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    for (name, code) in full_names.iter().zip(codes) {
        if code != 137 && !exits.contains_key(name) {
            exits.insert(
                name.clone(),
                Exit {
                    code,
                    oom: false,
                    finished: Some(now),
                },
            );
        }
    }
}

/// The exit conmon wrote in `status` (the code, in decimal), if it has;
/// `oom`: conmon's marker of a kill for memory.
fn read_exit(status: &Path, oom: Option<&Path>) -> Option<Exit> {
    let file = std::fs::File::open(status).ok()?;
    let finished = file
        .metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| k8s_openapi::jiff::Timestamp::try_from(t).ok());
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    Some(Exit {
        code: text.trim().parse().ok()?,
        oom: oom.is_some_and(Path::exists),
        finished,
    })
}

/// The ID of each of `images`, from one `podman image inspect`.
pub(crate) fn image_ids(images: &[String]) -> Option<BTreeMap<String, String>> {
    let text = output(
        "podman image inspect",
        Command::new("podman")
            .args(["image", "inspect", "--format", "{{.Id}}"])
            .args(images),
    )
    .ok()?;
    let ids: Vec<&str> = text.lines().map(str::trim).collect();
    (ids.len() == images.len() && ids.iter().all(|i| is_id(i))).then(|| {
        images
            .iter()
            .cloned()
            .zip(ids.into_iter().map(str::to_string))
            .collect()
    })
}

/// What is asked of podman about a container: name, state, conmon, log
/// file, ID and conmon's pid file.
const INSPECT_FORMAT: &str = "{{.Name}}\t{{.State.Status}}\t{{.State.ConmonPid}}\t{{.HostConfig.LogConfig.Path}}\t{{.Id}}\t{{.ConmonPidFile}}";

/// What `podman kube play` printed of a pod: its ID, and the IDs of the
/// pod's `containers` in their order (podman lists them as it creates
/// them; init containers are listed apart).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Played {
    pub pod: Option<String>,
    pub containers: Vec<String>,
}

impl Played {
    /// The name podman gives the pod's infra container.
    pub(crate) fn infra(&self) -> Option<String> {
        Some(format!("{}-infra", self.pod.as_deref()?.get(..12)?))
    }

    pub(crate) fn parse(report: &str) -> Played {
        let mut played = Played::default();
        let mut section = "";
        for line in report.lines().map(str::trim) {
            if let Some(title) = line.strip_suffix(':') {
                section = title;
            } else if is_id(line) {
                match section {
                    "Pod" if played.pod.is_none() => played.pod = Some(line.to_string()),
                    // "Container:" when there is one.
                    "Containers" | "Container" => played.containers.push(line.to_string()),
                    _ => {}
                }
            }
        }
        played
    }
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The log file and conmon of each container of a played pod
/// (`full_names`, in the order podman printed their IDs in `played`).
///
/// Only the pod's infra container is inspected: it runs for as long as the
/// pod does and is never behind a cleanup's lock. Each container's files
/// are where the infra container's are with its ID replaced by the
/// container's; a conmon found through its pid file must name the
/// container's ID and name on its command line, which checks podman's
/// order. `None` when anything does not match: ask podman then. While the
/// containers are being started (`ends.starting`), one not started yet is
/// found once it is ([`LogSource::started`]).
pub(crate) fn sources(
    full_names: &[String],
    played: &Played,
    ends: &PodEnds,
) -> Option<BTreeMap<String, LogSource>> {
    let ids = &played.containers;
    if ids.is_empty() || ids.len() != full_names.len() {
        return None;
    }
    let infra = played.infra()?;
    let text = inspect(std::slice::from_ref(&infra)).ok()?;
    let f: Vec<&str> = text.lines().next()?.split('\t').collect();
    let [name, _, _, log, known, pidfile] = f[..] else {
        return None;
    };
    if name != infra || !is_id(known) || ids.iter().any(|i| i == known) {
        return None;
    }
    let (log, pidfile) = (Path::new(log), Path::new(pidfile));
    let mut found = BTreeMap::new();
    for (name, id) in full_names.iter().zip(ids) {
        let path = with_id(log, known, id)?;
        let oom_file = path.parent().map(|d| d.join("oom"));
        let pidfile = with_id(pidfile, known, id)?;
        let (conmon, exit_file, pending) = match conmon_of(&pidfile, id, name) {
            Conmon::Runs(p, exit_dir) => (Some(p), exit_dir.map(|d| d.join(id)), None),
            Conmon::Gone => (None, None, None),
            Conmon::NotStarted if ends.starting.load(Ordering::SeqCst) => {
                (None, None, Some((pidfile, id.clone())))
            }
            Conmon::NotStarted | Conmon::Unknown => return None,
        };
        let ended = conmon.is_none() && pending.is_none();
        found.insert(
            name.clone(),
            LogSource {
                path,
                conmon,
                ended,
                exit_file,
                oom_file,
                pending,
            },
        );
    }
    Some(found)
}

/// Whether each container's end will be seen by its follower: the exit
/// file of every one of `sources` is known, or will be once it has started
/// (a follower that then sees no end says so).
pub(crate) fn exits_watchable(sources: &BTreeMap<String, LogSource>, containers: usize) -> bool {
    sources.len() == containers
        && sources
            .values()
            .all(|s| s.exit_file.is_some() || s.pending.is_some())
}

/// `path` with its component `id` (there must be exactly one) replaced by
/// `other`.
fn with_id(path: &Path, id: &str, other: &str) -> Option<PathBuf> {
    let is_it = |c: &Component<'_>| c.as_os_str() == id;
    if path.components().filter(is_it).count() != 1 {
        return None;
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        if is_it(&c) {
            out.push(other);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// What a conmon pid file says.
#[derive(Debug, PartialEq, Eq)]
enum Conmon {
    /// That conmon runs (the file may still grow), with the directory it
    /// writes the exit status in.
    Runs(ProcId, Option<PathBuf>),
    /// It ran and has ended (its process is gone, or the pid is another
    /// process's now): the container has ended and its file is complete.
    Gone,
    /// A conmon of this container under another name: nothing can be told
    /// from here.
    Unknown,
    /// No pid file (yet): the container has not been started, or its
    /// conmon's files are gone.
    NotStarted,
}

/// The conmon of container `id` (named `name`), from its pid file: the
/// process there must be a conmon of that container, by its command line
/// (`-c ID … -n NAME`), read while the same process runs.
fn conmon_of(pidfile: &Path, id: &str, name: &str) -> Conmon {
    let Some(pid) = read_small(pidfile, 32).and_then(|t| t.trim().parse::<i32>().ok()) else {
        return Conmon::NotStarted;
    };
    let Some(proc) = ProcId::of(pid) else {
        return Conmon::Gone;
    };
    let Some(cmdline) = read_small(Path::new(&format!("/proc/{pid}/cmdline")), 64 * 1024) else {
        return Conmon::Gone;
    };
    if !proc.alive() {
        return Conmon::Gone;
    }
    let args: Vec<&str> = cmdline.split('\0').collect();
    let value = |flag: &str| args.windows(2).find(|w| w[0] == flag).map(|w| w[1]);
    match (value("-c"), value("-n")) {
        (Some(c), Some(n)) if c == id && n == name => Conmon::Runs(
            proc,
            value("--exit-dir")
                .map(PathBuf::from)
                .filter(|d| d.is_absolute()),
        ),
        (Some(c), _) if c == id => Conmon::Unknown,
        _ => Conmon::Gone,
    }
}

/// At most `limit` bytes of a file, as text.
fn read_small(path: &Path, limit: u64) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(limit)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

fn inspect(names: &[String]) -> Result<String, RuntimeError> {
    output(
        "podman inspect (log files)",
        Command::new("podman")
            .args(["inspect", "--format", INSPECT_FORMAT])
            .args(names),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "1bec391609a9789a2adbd9f0b427008ef59cf825b8114a7df2cc9b5cc5402b81";
    const A: &str = "a763df2ae968b141bcbca91bbd49cf378b2f22bda6f58918515847ce5190edae";
    const B: &str = "6943095d16f50c3aa448c4adb9bb1ee8a0b69a7b025fa38ecb0b3324cc8a2a59";
    const C: &str = "f5fd5b59d9afc2d6dbe568676854d3a996de3c93c7a642555bf85bb28ee04e20";

    #[test]
    fn a_play_report_gives_the_pod_and_its_containers_in_order() {
        let report = format!(
            "Trying to pull x...\nPod:\n{POD}\nContainers:\n{A}\n{B}\nInit Containers:\n{C}\n"
        );
        let p = Played::parse(&report);
        assert_eq!(p.pod.as_deref(), Some(POD));
        assert_eq!(p.containers, [A, B]);
        // One container: podman says "Container:".
        let one = Played::parse(&format!("Pod:\n{POD}\nContainer:\n{A}\n"));
        assert_eq!(one.containers, [A]);
        // Nothing printed (an older podman, --quiet): nothing known.
        assert_eq!(Played::parse(""), Played::default());
        // Lines that are not IDs are not taken for one.
        let p = Played::parse(&format!(
            "Pod:\n{POD}\nContainers:\nnot-an-id\n{}\n",
            &A[1..]
        ));
        assert!(p.containers.is_empty());
    }

    #[test]
    fn the_infra_container_is_named_after_the_pod() {
        let p = Played::parse(&format!("Pod:\n{POD}\nContainers:\n{A}\n"));
        assert_eq!(p.infra().as_deref(), Some("1bec391609a9-infra"));
        assert_eq!(Played::default().infra(), None);
    }

    #[test]
    fn an_exit_file_gives_the_code_its_time_and_an_oom_kill() {
        let dir = std::env::temp_dir().join(format!("tkt-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (status, oom) = (dir.join(A), dir.join("oom"));
        // Not written yet: not ended.
        assert_eq!(read_exit(&status, Some(&oom)), None);
        std::fs::write(&status, "3").unwrap();
        let e = read_exit(&status, Some(&oom)).unwrap();
        let reason = |e: &Exit| crate::runtime::terminated_reason(e.code, e.oom);
        assert_eq!((e.code, e.oom, reason(&e)), (3, false, "Error"));
        assert!(e.finished.is_some());
        std::fs::write(&oom, "").unwrap();
        std::fs::write(&status, "137\n").unwrap();
        let e = read_exit(&status, Some(&oom)).unwrap();
        assert_eq!((e.code, e.oom, reason(&e)), (137, true, "OOMKilled"));
        // Half written, or not a code: not taken.
        std::fs::write(&status, "").unwrap();
        assert_eq!(read_exit(&status, None), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn podman_waits_codes_fill_the_ends_no_follower_saw() {
        let ends = PodEnds::default();
        let names = ["p-step-a".to_string(), "p-step-b".into(), "p-step-c".into()];
        let seen = Exit {
            code: 1,
            oom: false,
            finished: None,
        };
        ends.exits
            .lock()
            .unwrap()
            .insert("p-step-a".into(), seen.clone());
        // Fewer codes than containers: nothing is taken from it.
        record_waited(&ends, &names, "0\n0\n");
        assert_eq!(ends.exits.lock().unwrap().len(), 1);
        record_waited(&ends, &names, "1\n0\n137\n");
        let exits = ends.exits.lock().unwrap();
        // What a follower saw stays; a 137 is podman's to explain.
        assert_eq!(exits.get("p-step-a"), Some(&seen));
        assert_eq!(exits.get("p-step-b").map(|e| e.code), Some(0));
        assert!(!exits.contains_key("p-step-c"));
    }

    #[test]
    fn a_path_gets_another_containers_id_in_place_of_its_own() {
        let log = format!("/var/lib/containers/storage/overlay-containers/{A}/userdata/ctr.log");
        assert_eq!(
            with_id(Path::new(&log), A, B),
            Some(PathBuf::from(format!(
                "/var/lib/containers/storage/overlay-containers/{B}/userdata/ctr.log"
            )))
        );
        // Not there, or there twice: no telling which to replace.
        assert_eq!(with_id(Path::new("/var/log/ctr.log"), A, B), None);
        assert_eq!(
            with_id(Path::new(&format!("/{A}/x/{A}/ctr.log")), A, B),
            None
        );
        // Part of a component is not the component.
        assert_eq!(with_id(Path::new(&format!("/x/{A}-y/ctr.log")), A, B), None);
    }

    /// A process whose command line is `sh SCRIPT ARGS…`, as conmon's is
    /// `conmon … -c ID … -n NAME …`; killed on drop.
    struct Fake(std::process::Child);

    impl Fake {
        fn new(dir: &Path, args: &[&str]) -> Fake {
            let script = dir.join("fake.sh");
            // Not the last command, so the shell stays (and its command line).
            std::fs::write(&script, "sleep 30\n:\n").unwrap();
            let child = Command::new("sh")
                .arg(&script)
                .args(args)
                .process_group(0)
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            // Its command line is the test's until the shell has started.
            let cmdline = format!("/proc/{}/cmdline", child.id());
            let deadline = Instant::now() + Duration::from_secs(10);
            while !std::fs::read(&cmdline).is_ok_and(|c| c.windows(7).any(|w| w == b"fake.sh")) {
                assert!(Instant::now() < deadline, "the fake conmon did not start");
                std::thread::sleep(Duration::from_millis(5));
            }
            Fake(child)
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            // The shell and its sleep.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.0.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = self.0.wait();
        }
    }

    /// A source looked up before its container started.
    fn pending(dir: &Path, id: &str) -> LogSource {
        LogSource {
            path: dir.join("ctr.log"),
            conmon: None,
            ended: false,
            exit_file: None,
            oom_file: None,
            pending: Some((dir.join("conmon.pid"), id.to_string())),
        }
    }

    #[test]
    fn a_container_looked_up_before_its_start_is_found_once_started() {
        let dir = std::env::temp_dir().join(format!("tkt-pending-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ends = PodEnds::default();
        ends.starting.store(true, Ordering::SeqCst);
        // Its conmon and then its log file appear while `started` waits.
        let fake = Fake::new(
            &dir,
            &["-c", A, "-n", "pod-step-a", "--exit-dir", "/run/x/exits"],
        );
        let pid = fake.0.id();
        let writer = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                std::fs::write(dir.join("conmon.pid"), pid.to_string()).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                std::fs::write(dir.join("ctr.log"), "").unwrap();
            })
        };
        let s = pending(&dir, A).started("pod-step-a", &ends).unwrap();
        assert!(
            dir.join("ctr.log").exists(),
            "taken before its log file was made"
        );
        writer.join().unwrap();
        assert_eq!(s.conmon.map(|p| p.pid), Some(pid as i32));
        assert_eq!(s.exit_file, Some(Path::new("/run/x/exits").join(A)));
        assert!(!s.ended);
        // Another container's conmon under its pid file: not followed here.
        assert!(pending(&dir, A).started("pod-step-b", &ends).is_none());
        // A log file that does not appear is not waited for once the pod
        // has been stopped.
        std::fs::remove_file(dir.join("ctr.log")).unwrap();
        ends.stopped.store(true, Ordering::SeqCst);
        let s = pending(&dir, A).started("pod-step-a", &ends).unwrap();
        assert_eq!(s.conmon.map(|p| p.pid), Some(pid as i32));
        ends.stopped.store(false, Ordering::SeqCst);
        drop(fake);
        // Never started: once the start is over, it has ended (what its
        // file holds, if anything, is all there is).
        std::fs::remove_file(dir.join("conmon.pid")).unwrap();
        ends.starting.store(false, Ordering::SeqCst);
        let s = pending(&dir, A).started("pod-step-a", &ends).unwrap();
        assert!(s.ended && s.conmon.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_conmon_is_taken_only_when_its_command_line_names_the_container() {
        let dir = std::env::temp_dir().join(format!("tkt-conmon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("conmon.pid");
        // No pid file: not started (or its files are gone).
        assert_eq!(conmon_of(&pidfile, A, "pod-step-a"), Conmon::NotStarted);
        // A pid no process has: it has ended.
        let mut gone = Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        std::fs::write(&pidfile, format!("{gone_pid}\n")).unwrap();
        assert_eq!(conmon_of(&pidfile, A, "pod-step-a"), Conmon::Gone);
        // The container's conmon, by ID and name.
        let fake = Fake::new(
            &dir,
            &[
                "--api-version",
                "1",
                "-c",
                A,
                "-n",
                "pod-step-a",
                "--exit-dir",
                "/run/x/exits",
            ],
        );
        std::fs::write(&pidfile, fake.0.id().to_string()).unwrap();
        assert!(matches!(
            conmon_of(&pidfile, A, "pod-step-a"),
            Conmon::Runs(p, Some(d)) if p.pid == fake.0.id() as i32 && d == Path::new("/run/x/exits")
        ));
        // Another container's: its pid was taken by another process since.
        assert_eq!(conmon_of(&pidfile, B, "pod-step-b"), Conmon::Gone);
        // This container's under another name: podman's order is not the
        // one assumed, so nothing derived from it is used.
        assert_eq!(conmon_of(&pidfile, A, "pod-step-b"), Conmon::Unknown);
        drop(fake);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
