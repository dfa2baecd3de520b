//! The local run store: every run's object (with its status) and every
//! step's full log, kept after the run (Tekton loses logs with the pod).
//!
//! Layout under the root (`--state-dir`, else `$XDG_STATE_HOME/tektite`,
//! else `~/.local/state/tektite`):
//!
//! ```text
//! pipelineruns/<name>.json      the PipelineRun, status included
//! taskruns/<name>.json          each TaskRun, status included
//! logs/<taskrun>/<container>.log  one file per step (and sidecar), as written
//! live/<kind>-<name>.jsonl      the journal of a run being carried out (`live`)
//! work/<kind>-<name>/           a run's pods' directories while it runs
//! ```
//!
//! Objects are written atomically (a temporary file in the same directory,
//! then a rename), so an interrupted run never leaves a torn record; a log
//! is appended to as the step writes it. A name is claimed by linking a
//! complete first record into place, which fails when the name is taken:
//! two runs can never both get one. A record that cannot be read (a disk
//! error, a hand edit) is skipped by listings, which say which file it was,
//! and can be deleted like any other. Commands that only read never create
//! the store.

use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tektite_api::v1::{PipelineRun, TaskRun};

/// A store failure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid record: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("no state directory: set --state-dir, XDG_STATE_HOME or HOME")]
    NoHome,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The run store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Secret values no record may hold (`tkt run` with Secrets).
    mask: Option<std::sync::Arc<crate::mask::Masker>>,
}

/// `kind` directories in the store.
pub const PIPELINE_RUNS: &str = "pipelineruns";
pub const TASK_RUNS: &str = "taskruns";
const LOGS: &str = "logs";
const WORK: &str = "work";
/// In a run's work directory: where its fast directory is.
const FAST_RECORD: &str = ".fast-dir";

/// Which kind of run.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub enum RunKind {
    PipelineRun,
    TaskRun,
}

impl RunKind {
    /// `pipelinerun` / `taskrun`, as in file names and messages.
    pub fn lower(self) -> &'static str {
        match self {
            RunKind::PipelineRun => "pipelinerun",
            RunKind::TaskRun => "taskrun",
        }
    }

    /// `PipelineRuns` / `TaskRuns`, as in messages.
    pub fn plural(self) -> &'static str {
        match self {
            RunKind::PipelineRun => "PipelineRuns",
            RunKind::TaskRun => "TaskRuns",
        }
    }

    /// The store's directory of records of this kind.
    pub fn dir(self) -> &'static str {
        match self {
            RunKind::PipelineRun => PIPELINE_RUNS,
            RunKind::TaskRun => TASK_RUNS,
        }
    }
}

/// The records of one kind that could be read, and those that could not.
#[derive(Debug)]
pub struct Listing<T> {
    pub runs: Vec<T>,
    /// Each unreadable record: its run's name, and why (the error names
    /// its file).
    pub unreadable: Vec<(String, StoreError)>,
}

impl Store {
    /// The store at `dir`, or the default location.
    ///
    /// # Errors
    /// No directory can be chosen, or it cannot be created.
    pub fn open(dir: Option<&Path>) -> Result<Store, StoreError> {
        let store = Store::existing(dir)?;
        // Records hold param values, logs what steps print, and the work
        // directories the runs' volumes: for this user only (a store
        // directory made here, and each part of any store).
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&store.root)
            .map_err(io(&store.root))?;
        for sub in [PIPELINE_RUNS, TASK_RUNS, LOGS, WORK] {
            let p = store.root.join(sub);
            fs::create_dir_all(&p)
                .and_then(|()| fs::set_permissions(&p, fs::Permissions::from_mode(0o700)))
                .map_err(io(&p))?;
        }
        Ok(store)
    }

    /// The store at `dir`, or the default location, without creating it:
    /// for commands that only read (a missing store is an empty one).
    ///
    /// # Errors
    /// No directory can be chosen, or the path is not a directory.
    pub fn existing(dir: Option<&Path>) -> Result<Store, StoreError> {
        let root = match dir {
            Some(d) => d.to_path_buf(),
            None => default_root().ok_or(StoreError::NoHome)?,
        };
        if root.exists() && !root.is_dir() {
            return Err(StoreError::Io {
                path: root,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "not a directory: the run store is a directory",
                ),
            });
        }
        Ok(Store { root, mask: None })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This store, masking `m`'s values in every record it writes and in
    /// every log opened through it (see [`crate::mask`]).
    #[must_use]
    pub fn masking(mut self, m: crate::mask::Masker) -> Store {
        self.mask = (!m.is_empty()).then(|| std::sync::Arc::new(m));
        self
    }

    /// The masker of this store's records and logs, if any.
    pub fn mask(&self) -> Option<std::sync::Arc<crate::mask::Masker>> {
        self.mask.clone()
    }

    /// A record's bytes: `value` as JSON, Secret values masked.
    fn record_bytes<T: Serialize>(&self, path: &Path, value: &T) -> Result<Vec<u8>, StoreError> {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let Some(m) = &self.mask else {
            return serde_json::to_vec_pretty(value).map_err(corrupt);
        };
        let mut v = serde_json::to_value(value).map_err(corrupt)?;
        m.mask_json(&mut v);
        serde_json::to_vec_pretty(&v).map_err(corrupt)
    }

    fn object_path(&self, kind: &str, name: &str) -> PathBuf {
        self.root.join(kind).join(format!("{name}.json"))
    }

    fn save<T: Serialize>(&self, kind: &str, name: &str, value: &T) -> Result<(), StoreError> {
        let path = self.object_path(kind, name);
        let bytes = self.record_bytes(&path, value)?;
        write_atomic(&path, &bytes)
    }

    fn load<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
        let bytes = fs::read(path).map_err(io(path))?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    fn get<T: DeserializeOwned>(&self, kind: &str, name: &str) -> Result<Option<T>, StoreError> {
        let path = self.object_path(kind, name);
        if fs::symlink_metadata(&path).is_err() {
            return Ok(None);
        }
        Self::load(&path).map(Some)
    }

    /// Whether a record of `kind` called `name` exists, readable or not.
    pub fn has(&self, kind: &str, name: &str) -> bool {
        fs::symlink_metadata(self.object_path(kind, name)).is_ok()
    }

    fn all<T: DeserializeOwned>(&self, kind: &str) -> Result<Listing<T>, StoreError> {
        let dir = self.root.join(kind);
        let mut out = Listing {
            runs: Vec::new(),
            unreadable: Vec::new(),
        };
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for p in paths {
            match Self::load(&p) {
                Ok(r) => out.runs.push(r),
                Err(e) => {
                    let name = p.file_stem().unwrap_or_default().to_string_lossy();
                    out.unreadable.push((name.into_owned(), e));
                }
            }
        }
        Ok(out)
    }

    /// Claims `name` for a new record of `kind` holding `value`: the record
    /// is written whole to a temporary file and linked into place, which
    /// fails if the name is taken. Returns whether the name was free.
    fn claim<T: Serialize>(&self, kind: &str, name: &str, value: &T) -> Result<bool, StoreError> {
        let path = self.object_path(kind, name);
        let bytes = self.record_bytes(&path, value)?;
        let tmp = write_temp(&path, &bytes)?;
        let claimed = match fs::hard_link(&tmp, &path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io(&path)(e)),
        };
        let _ = fs::remove_file(&tmp);
        claimed
    }

    /// Records a new PipelineRun under its name, unless the name is taken
    /// (`false`).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn claim_pipeline_run(&self, pr: &PipelineRun) -> Result<bool, StoreError> {
        self.claim(
            PIPELINE_RUNS,
            pr.metadata.name.as_deref().unwrap_or_default(),
            pr,
        )
    }

    /// Records a new TaskRun under its name, unless the name is taken
    /// (`false`).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn claim_task_run(&self, tr: &TaskRun) -> Result<bool, StoreError> {
        self.claim(
            TASK_RUNS,
            tr.metadata.name.as_deref().unwrap_or_default(),
            tr,
        )
    }

    /// Records a PipelineRun (status included), replacing the record.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save_pipeline_run(&self, pr: &PipelineRun) -> Result<(), StoreError> {
        self.save(
            PIPELINE_RUNS,
            pr.metadata.name.as_deref().unwrap_or_default(),
            pr,
        )
    }

    /// Records a TaskRun (status included), replacing the record.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save_task_run(&self, tr: &TaskRun) -> Result<(), StoreError> {
        self.save(
            TASK_RUNS,
            tr.metadata.name.as_deref().unwrap_or_default(),
            tr,
        )
    }

    /// # Errors
    /// A record that cannot be read.
    pub fn pipeline_run(&self, name: &str) -> Result<Option<PipelineRun>, StoreError> {
        self.get(PIPELINE_RUNS, name)
    }

    /// # Errors
    /// A record that cannot be read.
    pub fn task_run(&self, name: &str) -> Result<Option<TaskRun>, StoreError> {
        self.get(TASK_RUNS, name)
    }

    /// Every readable PipelineRun, by name, and the unreadable records.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn pipeline_runs(&self) -> Result<Listing<PipelineRun>, StoreError> {
        self.all(PIPELINE_RUNS)
    }

    /// Every readable TaskRun, by name, and the unreadable records.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn task_runs(&self) -> Result<Listing<TaskRun>, StoreError> {
        self.all(TASK_RUNS)
    }

    /// The TaskRuns of a PipelineRun (label `tekton.dev/pipelineRun`), and
    /// the unreadable TaskRun records.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn task_runs_of(&self, pipeline_run: &str) -> Result<Listing<TaskRun>, StoreError> {
        let mut l = self.task_runs()?;
        l.runs.retain(|t| {
            t.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("tekton.dev/pipelineRun"))
                .is_some_and(|n| n == pipeline_run)
        });
        Ok(l)
    }

    /// Where a run's pods keep their directories while it runs.
    pub fn work_dir(&self, kind: RunKind, run: &str) -> PathBuf {
        self.root.join(WORK).join(format!("{}-{run}", kind.lower()))
    }

    /// Where a run's pods keep their bookkeeping volumes while it runs
    /// ([`crate::tmpfs`]): in this store's directory on a tmpfs, or the
    /// work directory itself when there is none.
    pub fn fast_work_dir(&self, kind: RunKind, run: &str) -> PathBuf {
        match crate::tmpfs::base() {
            Some(base) => {
                crate::tmpfs::store_dir(base, &self.root).join(format!("{}-{run}", kind.lower()))
            }
            None => self.work_dir(kind, run),
        }
    }

    /// Removes a record, readable or not (a missing one is no error).
    ///
    /// # Errors
    /// The file cannot be removed.
    pub fn remove_record(&self, kind: &str, name: &str) -> Result<(), StoreError> {
        let path = self.object_path(kind, name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Removes a TaskRun's record and logs.
    ///
    /// # Errors
    /// A file cannot be removed.
    pub fn remove_task_run(&self, name: &str) -> Result<(), StoreError> {
        self.remove_record(TASK_RUNS, name)?;
        remove_tree(&self.root.join(LOGS).join(name))
    }

    /// Makes a run's work directory and records in it where its fast
    /// directory is ([`Store::fast_work_dir`], which depends on this
    /// process's environment): a later `tkt` that removes the run (after
    /// `--keep`, or recovering it after a crash) removes that one.
    /// Returns both.
    ///
    /// # Errors
    /// The directory or the record cannot be written.
    pub fn make_work_dirs(
        &self,
        kind: RunKind,
        run: &str,
    ) -> Result<(PathBuf, PathBuf), StoreError> {
        let (work, fast) = (self.work_dir(kind, run), self.fast_work_dir(kind, run));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&work)
            .map_err(io(&work))?;
        if fast != work {
            let record = work.join(FAST_RECORD);
            fs::write(&record, fast.as_os_str().as_encoded_bytes()).map_err(io(&record))?;
        }
        Ok((work, fast))
    }

    /// Removes a run's work directories, on disk and on the tmpfs (left
    /// by `--keep` or a crash): the fast directory the run recorded, when
    /// it lies where one can ([`crate::tmpfs::is_run_dir`]), else where
    /// this process would put it.
    ///
    /// # Errors
    /// A directory cannot be removed (both are tried).
    pub fn remove_work_dir(&self, kind: RunKind, run: &str) -> Result<(), StoreError> {
        let work = self.work_dir(kind, run);
        let leaf = format!("{}-{run}", kind.lower());
        let recorded = crate::beneath::read(&work, Path::new(FAST_RECORD), 4096)
            .ok()
            .map(|b| PathBuf::from(std::ffi::OsString::from_vec(b)))
            .filter(|p| crate::tmpfs::is_run_dir(p, &leaf));
        let fast = recorded.unwrap_or_else(|| self.fast_work_dir(kind, run));
        let removed_fast = if fast == work {
            Ok(())
        } else {
            let r = remove_tree(&fast);
            // The store's directory on the tmpfs goes with its last run (a
            // run starting meanwhile makes it again).
            if let Some(store_dir) = fast.parent() {
                let _ = fs::remove_dir(store_dir);
            }
            r
        };
        let removed = remove_tree(&work);
        removed_fast.and(removed)
    }

    /// Where the log of one container of a TaskRun is kept.
    pub fn log_path(&self, task_run: &str, container: &str) -> PathBuf {
        self.root
            .join(LOGS)
            .join(task_run)
            .join(format!("{container}.log"))
    }

    /// Opens (creating) a container's log for appending.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn open_log(&self, task_run: &str, container: &str) -> Result<fs::File, StoreError> {
        let path = self.log_path(task_run, container);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))
    }

    /// The logs of a TaskRun's containers: (container, file), in the order
    /// the TaskRun's steps are listed in its status, then any others by
    /// name. Read them as streams: a log may be larger than memory.
    pub fn logs(&self, tr: &TaskRun) -> Vec<(String, PathBuf)> {
        let name = tr.metadata.name.as_deref().unwrap_or_default();
        let dir = self.root.join(LOGS).join(name);
        let mut found: Vec<String> = match fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".log")
                        .map(str::to_string)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        found.sort();
        let mut order: Vec<String> = tr
            .status
            .iter()
            .flat_map(|s| &s.steps)
            .filter_map(|s| s.container.clone())
            .filter(|c| found.contains(c))
            .collect();
        for c in found {
            if !order.contains(&c) {
                order.push(c);
            }
        }
        order
            .into_iter()
            .map(|c| {
                let p = self.log_path(name, &c);
                (c, p)
            })
            .collect()
    }
}

/// Five random characters, as Kubernetes adds to a `generateName`.
pub fn random_suffix() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    // RandomState is seeded from the OS for every instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut x = h.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// The root a store opened with `dir` has: `dir`, else the default.
pub fn root_for(dir: Option<&Path>) -> Option<PathBuf> {
    dir.map(Path::to_path_buf).or_else(default_root)
}

/// `$XDG_STATE_HOME/tektite`, else `$HOME/.local/state/tektite`.
fn default_root() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("tektite"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".local/state/tektite"))
}

fn remove_tree(dir: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(dir)(e)),
        _ => Ok(()),
    }
}

/// Writes `bytes` to a new temporary file beside `path` (same directory,
/// so it can be renamed or linked into place), synced; returns its path.
fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, StoreError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| tmp)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
///
/// # Errors
/// The temporary file cannot be written or renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = write_temp(path, bytes)?;
    // The rename is atomic whatever ends this process; the file's content
    // was synced first, so a machine crash leaves the old record or the new.
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tektite_api::v1::{PipelineRunSpec, TaskRunSpec};

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn records_round_trip_and_list() {
        let d = temp("rt");
        let s = Store::open(Some(&d)).unwrap();
        let pr = PipelineRun::new("p1", PipelineRunSpec::default());
        s.save_pipeline_run(&pr).unwrap();
        let mut tr = TaskRun::new("p1-a", TaskRunSpec::default());
        tr.metadata.labels =
            Some([("tekton.dev/pipelineRun".to_string(), "p1".to_string())].into());
        s.save_task_run(&tr).unwrap();
        s.save_task_run(&TaskRun::new("other", TaskRunSpec::default()))
            .unwrap();
        assert_eq!(
            s.pipeline_run("p1")
                .unwrap()
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("p1")
        );
        assert!(s.pipeline_run("nope").unwrap().is_none());
        assert_eq!(s.task_runs().unwrap().runs.len(), 2);
        assert_eq!(s.task_runs_of("p1").unwrap().runs.len(), 1);
        let mut log = s.open_log("p1-a", "step-x").unwrap();
        writeln!(log, "hello").unwrap();
        let logs = s.logs(&tr);
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].0, "step-x");
        assert_eq!(fs::read_to_string(&logs[0].1).unwrap(), "hello\n");
        fs::remove_dir_all(&d).unwrap();
    }

    /// Of many claims of one name at once, exactly one wins, and the
    /// record in place is whole.
    #[test]
    fn a_name_is_claimed_once() {
        let d = temp("claim");
        let s = Store::open(Some(&d)).unwrap();
        let wins: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let s = &s;
                    scope.spawn(move || {
                        let mut tr = TaskRun::new("same", TaskRunSpec::default());
                        tr.metadata.uid = Some(format!("u{i}"));
                        usize::from(s.claim_task_run(&tr).unwrap())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(wins, 1);
        let tr = s.task_run("same").unwrap().unwrap();
        assert!(tr.metadata.uid.is_some_and(|u| u.starts_with('u')));
        let leftovers: Vec<_> = fs::read_dir(d.join("taskruns"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, ["same.json"], "no temporary file left");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_corrupt_record_names_its_file() {
        let d = temp("corrupt");
        let s = Store::open(Some(&d)).unwrap();
        fs::write(d.join("taskruns/bad.json"), "{not json").unwrap();
        let e = s.task_run("bad").unwrap_err().to_string();
        assert!(
            e.contains("bad.json") && e.contains("not a valid record"),
            "{e}"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
