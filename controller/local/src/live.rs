//! The live record of a run being carried out: which `tkt` runs it and what
//! it has started (process sessions, podman pods), so that whatever happens
//! to that `tkt` (Ctrl-C twice, SIGHUP, `kill -9`, a crash) nothing it
//! started is left running and the run is not left `Running` forever.
//!
//! A journal is a file of JSON lines in the store's `live/` directory,
//! appended to as each thing it names is started (a podman pod before it is
//! played, a process session as soon as it exists), removed when the run
//! has ended and been recorded. A journal whose owner is gone
//! is the mark of an abandoned run: [`recover`] stops what it names, marks
//! the run and its unfinished TaskRuns failed with [`ABANDONED`], and
//! removes the run's work directory. `tkt`'s watchdog runs it the moment
//! its `tkt` ends; every store command runs it for journals it finds.
//!
//! A torn last line (a crash mid-append) is ignored: what it named had not
//! been started yet.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use k8s_openapi::jiff::Timestamp;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tektite_api::v1::TaskRun;
use tektite_engine::status::{fail_pipeline_run, fail_task_run, is_done};

use crate::procs::{self, ProcId};
use crate::store::{RunKind, Store, StoreError};

/// The reason of a run whose `tkt` ended before it did.
pub const ABANDONED: &str = "TktExited";

/// The store's directory of journals.
pub const LIVE: &str = "live";

/// One line of a journal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
enum Entry {
    /// The `tkt` carrying out the run, and the run.
    Owner {
        owner: ProcId,
        kind: RunKind,
        name: String,
    },
    /// A process session made for a container (process runtime): its
    /// leader; every member started at or after the leader. `leader_last`:
    /// kill the leader after the others (see `procs::kill_session`).
    Session {
        leader: ProcId,
        #[serde(default)]
        leader_last: bool,
    },
    /// A podman pod about to be played.
    PodmanPod { name: String },
}

/// A run's journal, held by the `tkt` carrying it out.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the journal of a run is.
pub fn journal_path(store: &Store, kind: RunKind, name: &str) -> PathBuf {
    store
        .root()
        .join(LIVE)
        .join(format!("{}-{name}.jsonl", kind.lower()))
}

impl Journal {
    /// Starts the journal of a run carried out by this process, unless a
    /// `tkt` that still runs holds one for that name (`None`). One left by
    /// a `tkt` that is gone is recovered first. Journals are put in place
    /// whole, owner line included, by a link that fails when the name is
    /// taken: never seen without their owner, never two for one run.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn create(store: &Store, kind: RunKind, name: &str) -> Result<Option<Journal>, StoreError> {
        let path = journal_path(store, kind, name);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let owner = ProcId::current().ok_or_else(|| StoreError::Corrupt {
            path: PathBuf::from("/proc/self/stat"),
            message: "cannot read this process's start time".into(),
        })?;
        let mut first = serde_json::to_vec(&Entry::Owner {
            owner,
            kind,
            name: name.to_string(),
        })
        .map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        first.push(b'\n');
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        fs::write(&tmp, &first).map_err(io(&tmp))?;
        let mut linked = Ok(false);
        for _ in 0..2 {
            linked = match fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(io(&path)(e)),
            };
            if !matches!(linked, Ok(false)) || read(&path).is_some_and(|l| l.owner.alive()) {
                break;
            }
            // Left by a `tkt` that is gone: recovered, then the name is free.
            recover_abandoned(store, None);
        }
        let _ = fs::remove_file(&tmp);
        if !linked? {
            return Ok(None);
        }
        // A cancel asked of an earlier run of this name is not for this one.
        let _ = fs::remove_file(path.with_extension("cancel"));
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(Some(Journal {
            path,
            file: Mutex::new(file),
        }))
    }

    fn append(&self, e: &Entry) -> Result<(), StoreError> {
        let mut line = serde_json::to_vec(e).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        line.push(b'\n');
        let mut f = self
            .file
            .lock()
            .map_err(|_| io(&self.path)(std::io::Error::other("journal lock poisoned")))?;
        // One write of a whole line: once it returns, a `tkt` killed
        // any way leaves it for the watchdog to read (no sync needed: what
        // it names dies with the machine).
        f.write_all(&line).map_err(io(&self.path))
    }

    /// Records a process session made for a container.
    ///
    /// # Errors
    /// The journal cannot be written.
    pub fn session(&self, leader: ProcId, leader_last: bool) -> Result<(), StoreError> {
        self.append(&Entry::Session {
            leader,
            leader_last,
        })
    }

    /// Records a podman pod, before it is played.
    ///
    /// # Errors
    /// The journal cannot be written.
    pub fn podman_pod(&self, name: &str) -> Result<(), StoreError> {
        self.append(&Entry::PodmanPod {
            name: name.to_string(),
        })
    }

    /// Whether another command asked for the run to be cancelled
    /// ([`request_cancel`]).
    pub fn cancel_requested(&self) -> bool {
        self.path.with_extension("cancel").exists()
    }

    /// How the run was asked to be cancelled, if it was: a PipelineRun's
    /// `spec.status` (`Cancelled`, `CancelledRunFinally`,
    /// `StoppedRunFinally`); an empty or unreadable request is `Cancelled`.
    pub fn cancel_request(&self) -> Option<String> {
        let path = self.path.with_extension("cancel");
        if !path.exists() {
            return None;
        }
        let how = read_small(&path).unwrap_or_default();
        Some(match how.trim() {
            "CancelledRunFinally" => "CancelledRunFinally".into(),
            "StoppedRunFinally" => "StoppedRunFinally".into(),
            _ => "Cancelled".into(),
        })
    }

    /// Kills everything the run has started, at once (a second Ctrl-C):
    /// the runner then sees its pods end and records the run.
    pub fn stop_now(&self) {
        if let Some(l) = read(&self.path) {
            stop(&l, Pods::Stop);
        }
    }

    /// The run has ended and is recorded: nothing to recover.
    pub fn release(&self) {
        let _ = fs::remove_file(self.path.with_extension("cancel"));
        let _ = fs::remove_file(&self.path);
    }
}

/// Asks the `tkt` carrying out a run to cancel it; it sees the request
/// within a second.
///
/// # Errors
/// The request cannot be written.
pub fn request_cancel(store: &Store, kind: RunKind, name: &str) -> Result<(), StoreError> {
    request_cancel_as(store, kind, name, "Cancelled")
}

/// Asks the `tkt` carrying out a run to cancel it as `how` says (a
/// PipelineRun's `spec.status`: `Cancelled`, `CancelledRunFinally` or
/// `StoppedRunFinally`). Written whole (a reader never sees half of it).
pub fn request_cancel_as(
    store: &Store,
    kind: RunKind,
    name: &str,
    how: &str,
) -> Result<(), StoreError> {
    let path = journal_path(store, kind, name).with_extension("cancel");
    crate::store::write_atomic(&path, how.as_bytes())
}

/// At most 64 bytes of a small file the run store holds (a step cannot
/// write here, but nothing read is trusted to be small).
fn read_small(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut s = String::new();
    fs::File::open(path)
        .ok()?
        .take(64)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// Drops a cancel request that no run will take (its run ended first).
pub fn forget_cancel(store: &Store, kind: RunKind, name: &str) {
    let _ = fs::remove_file(journal_path(store, kind, name).with_extension("cancel"));
}

/// Whether a `tkt` that still runs is carrying out this run.
pub fn is_live(store: &Store, kind: RunKind, name: &str) -> bool {
    read(&journal_path(store, kind, name)).is_some_and(|l| l.owner.alive())
}

/// What becomes of a run's podman pods when what it started is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pods {
    /// Stopped, for the runner to remove (it reads their output to its end).
    Stop,
    /// Removed, checked again for a moment: a pod can appear just after a
    /// `podman` making it is killed.
    Remove,
}

/// Kills what a journal names: every process of its sessions first (a
/// `podman kube play` among them), then its podman pods.
fn stop(l: &Leftovers, pods: Pods) {
    for (s, leader_last) in &l.sessions {
        procs::kill_session(s.pid, s.start, *leader_last);
    }
    let podman = |args: &[&str]| {
        std::process::Command::new("podman")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    for pod in &l.pods {
        if pods == Pods::Stop {
            podman(&["pod", "stop", "--time", "0", pod]);
            continue;
        }
        for _ in 0..5 {
            podman(&["pod", "rm", "--force", "--time", "0", pod]);
            std::thread::sleep(std::time::Duration::from_millis(200));
            if !podman(&["pod", "exists", pod]) {
                break;
            }
        }
    }
}

/// What a journal says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftovers {
    pub owner: ProcId,
    pub kind: RunKind,
    pub name: String,
    /// Each session's leader, and whether it is killed last.
    pub sessions: Vec<(ProcId, bool)>,
    pub pods: Vec<String>,
}

/// Reads a journal; `None` when it cannot be read or has no owner line.
pub fn read(path: &Path) -> Option<Leftovers> {
    parse(&fs::read_to_string(path).ok()?)
}

/// A journal's lines; a torn last line (a `tkt` killed mid-write) is
/// skipped.
fn parse(text: &str) -> Option<Leftovers> {
    let mut out: Option<Leftovers> = None;
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<Entry>(line) else {
            continue;
        };
        match (e, out.as_mut()) {
            (Entry::Owner { owner, kind, name }, None) => {
                out = Some(Leftovers {
                    owner,
                    kind,
                    name,
                    sessions: Vec::new(),
                    pods: Vec::new(),
                });
            }
            (
                Entry::Session {
                    leader,
                    leader_last,
                },
                Some(l),
            ) => l.sessions.push((leader, leader_last)),
            (Entry::PodmanPod { name }, Some(l)) => l.pods.push(name),
            _ => {}
        }
    }
    out
}

/// Every journal of the store, with its path.
pub fn journals(store: &Store) -> Vec<PathBuf> {
    let dir = store.root().join(LIVE);
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    v.sort();
    v
}

/// What [`recover`] did, for the user to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub kind: RunKind,
    pub name: String,
    pub owner: ProcId,
}

impl std::fmt::Display for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} was left running by a tkt that ended (pid {}): marked failed ({ABANDONED}), its leftovers removed",
            self.kind.lower(),
            self.name,
            self.owner.pid
        )
    }
}

/// Recovers every run whose `tkt` is gone (`owner`: only runs of that
/// `tkt`, which the caller knows to be gone). Runs whose `tkt` still runs
/// are left alone.
pub fn recover_abandoned(store: &Store, owner: Option<ProcId>) -> Vec<Recovered> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Vec::new();
    for path in journals(store) {
        // A journal that cannot be read now (permissions, I/O) is left as
        // it is; one read without an owner line is not ours to keep.
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let Some(l) = parse(&text) else {
            let _ = fs::remove_file(&path);
            continue;
        };
        let gone = match owner {
            Some(o) => l.owner == o,
            None => !l.owner.alive(),
        };
        if !gone {
            continue;
        }
        // One recovery at a time (the watchdog and a store command may both
        // find it); the one that waited finds it done. The file locked must
        // still be the one at the path (not a new run's journal since).
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let Ok(lock) = Flock::lock(file, FlockArg::LockExclusive) else {
            continue;
        };
        let same = match (lock.metadata(), fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if !same {
            continue;
        }
        recover(store, &l);
        let _ = fs::remove_file(path.with_extension("cancel"));
        let _ = fs::remove_file(&path);
        out.push(Recovered {
            kind: l.kind,
            name: l.name.clone(),
            owner: l.owner,
        });
    }
    out
}

/// Stops what an abandoned run left running and records how it ended.
fn recover(store: &Store, l: &Leftovers) {
    stop(l, Pods::Remove);
    let message = format!(
        "the tkt process running it (pid {}) ended before the run did; what it had started was stopped",
        l.owner.pid
    );
    let now = Timestamp::now();
    let task_runs = match l.kind {
        RunKind::PipelineRun => {
            if let Ok(Some(mut pr)) = store.pipeline_run(&l.name)
                && !pr.status.as_ref().is_some_and(|s| is_done(&s.conditions))
            {
                fail_pipeline_run(&mut pr, ABANDONED, &message, now);
                let _ = store.save_pipeline_run(&pr);
            }
            store
                .task_runs_of(&l.name)
                .map(|l| l.runs)
                .unwrap_or_default()
        }
        RunKind::TaskRun => store.task_run(&l.name).ok().flatten().into_iter().collect(),
    };
    let unfinished = |t: &TaskRun| !t.status.as_ref().is_some_and(|s| is_done(&s.conditions));
    for mut tr in task_runs.into_iter().filter(unfinished) {
        fail_task_run(&mut tr, ABANDONED, &message, now);
        let _ = store.save_task_run(&tr);
    }
    let _ = store.remove_work_dir(l.kind, &l.name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tektite_api::v1::{PipelineRun, PipelineRunSpec, TaskRunSpec};
    use tektite_engine::status::{condition, set_condition};

    fn store(name: &str) -> (Store, PathBuf) {
        let d = std::env::temp_dir().join(format!("live-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        (Store::open(Some(&d)).unwrap(), d)
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let (s, d) = store("torn");
        // A cancel asked of an earlier run of the name is not for this one.
        fs::create_dir_all(s.root().join(LIVE)).unwrap();
        request_cancel(&s, RunKind::TaskRun, "t").unwrap();
        let j = Journal::create(&s, RunKind::TaskRun, "t").unwrap().unwrap();
        assert!(
            Journal::create(&s, RunKind::TaskRun, "t")
                .unwrap()
                .is_none(),
            "one journal a run"
        );
        assert!(!j.cancel_requested());
        j.podman_pod("t-pod").unwrap();
        let path = journal_path(&s, RunKind::TaskRun, "t");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"podmanPod":{"na"#).unwrap();
        let l = read(&path).unwrap();
        assert_eq!((l.name.as_str(), l.pods.len()), ("t", 1));
        assert!(is_live(&s, RunKind::TaskRun, "t"), "this process owns it");
        j.release();
        assert!(!path.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    /// A journal whose owner is gone: the run and its unfinished TaskRuns
    /// are marked failed with the reason; a finished TaskRun is left as it
    /// ended; the journal and the work directory go.
    #[test]
    fn an_abandoned_run_is_recovered_once() {
        let (s, d) = store("abandoned");
        s.save_pipeline_run(&PipelineRun::new("p", PipelineRunSpec::default()))
            .unwrap();
        let child = |name: &str| {
            let mut tr = TaskRun::new(name, TaskRunSpec::default());
            tr.metadata.labels = Some([("tekton.dev/pipelineRun".into(), "p".into())].into());
            tr
        };
        s.save_task_run(&child("p-a")).unwrap();
        let mut done = child("p-b");
        set_condition(
            &mut done.status.get_or_insert_with(Default::default).conditions,
            condition("True", "Succeeded", "ok", Timestamp::now()),
        );
        s.save_task_run(&done).unwrap();
        fs::create_dir_all(s.work_dir(RunKind::PipelineRun, "p")).unwrap();
        let j = Journal::create(&s, RunKind::PipelineRun, "p")
            .unwrap()
            .unwrap();
        // The owner as a process that is gone (same pid, another start).
        let path = journal_path(&s, RunKind::PipelineRun, "p");
        let mut l = read(&path).unwrap();
        l.owner.start += 1;
        drop(j);
        let text = fs::read_to_string(&path).unwrap().replacen(
            &format!("\"start\":{}", l.owner.start - 1),
            &format!("\"start\":{}", l.owner.start),
            1,
        );
        fs::write(&path, text).unwrap();
        assert!(!is_live(&s, RunKind::PipelineRun, "p"));

        let r = recover_abandoned(&s, None);
        assert_eq!(r.len(), 1);
        assert!(r[0].to_string().contains("pipelinerun p was left running"));
        let reason = |c: &[tektite_api::v1::Condition]| {
            tektite_api::v1::Condition::succeeded(c)
                .and_then(|c| c.reason.clone())
                .unwrap_or_default()
        };
        let pr = s.pipeline_run("p").unwrap().unwrap();
        assert_eq!(reason(&pr.status.unwrap().conditions), ABANDONED);
        let a = s.task_run("p-a").unwrap().unwrap();
        assert_eq!(reason(&a.status.unwrap().conditions), ABANDONED);
        let b = s.task_run("p-b").unwrap().unwrap();
        assert_eq!(reason(&b.status.unwrap().conditions), "Succeeded");
        assert!(!path.exists() && !s.work_dir(RunKind::PipelineRun, "p").exists());
        assert!(recover_abandoned(&s, None).is_empty(), "once");
        fs::remove_dir_all(&d).unwrap();
    }
}
