//! The local run store: every run's object (with its status) and every
//! step's full log, kept after the run (Tekton loses logs with the pod).
//!
//! Layout under the root (`--state-dir`, else `$XDG_STATE_HOME/tektite`,
//! else `~/.local/state/tektite`):
//!
//! ```text
//! pipelineruns/<name>.json      the PipelineRun, status included
//! taskruns/<name>.json          each TaskRun, status included
//! logs/<taskrun>/<container>.log  one file per step (and sidecar)
//! ```
//!
//! Objects are written atomically (a temporary file in the same directory,
//! then a rename), so an interrupted run never leaves a torn record; a log
//! is appended to as the step writes it.

use std::fs;
use std::io::Write as _;
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
}

/// `kind` directories in the store.
const PIPELINE_RUNS: &str = "pipelineruns";
const TASK_RUNS: &str = "taskruns";
const LOGS: &str = "logs";

impl Store {
    /// The store at `dir`, or the default location.
    ///
    /// # Errors
    /// No directory can be chosen, or it cannot be created.
    pub fn open(dir: Option<&Path>) -> Result<Store, StoreError> {
        let root = match dir {
            Some(d) => d.to_path_buf(),
            None => default_root().ok_or(StoreError::NoHome)?,
        };
        for sub in [PIPELINE_RUNS, TASK_RUNS, LOGS] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn object_path(&self, kind: &str, name: &str) -> PathBuf {
        self.root.join(kind).join(format!("{name}.json"))
    }

    fn save<T: Serialize>(&self, kind: &str, name: &str, value: &T) -> Result<(), StoreError> {
        let path = self.object_path(kind, name);
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
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
        if !path.exists() {
            return Ok(None);
        }
        Self::load(&path).map(Some)
    }

    fn all<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>, StoreError> {
        let dir = self.root.join(kind);
        let mut out = Vec::new();
        let entries = fs::read_dir(&dir).map_err(io(&dir))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for p in paths {
            out.push(Self::load(&p)?);
        }
        Ok(out)
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

    /// Every PipelineRun, by name.
    ///
    /// # Errors
    /// A record that cannot be read.
    pub fn pipeline_runs(&self) -> Result<Vec<PipelineRun>, StoreError> {
        self.all(PIPELINE_RUNS)
    }

    /// Every TaskRun, by name.
    ///
    /// # Errors
    /// A record that cannot be read.
    pub fn task_runs(&self) -> Result<Vec<TaskRun>, StoreError> {
        self.all(TASK_RUNS)
    }

    /// The TaskRuns of a PipelineRun (label `tekton.dev/pipelineRun`).
    ///
    /// # Errors
    /// A record that cannot be read.
    pub fn task_runs_of(&self, pipeline_run: &str) -> Result<Vec<TaskRun>, StoreError> {
        Ok(self
            .task_runs()?
            .into_iter()
            .filter(|t| {
                t.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("tekton.dev/pipelineRun"))
                    .is_some_and(|n| n == pipeline_run)
            })
            .collect())
    }

    /// Whether a PipelineRun of this name is recorded.
    pub fn has_pipeline_run(&self, name: &str) -> bool {
        self.object_path(PIPELINE_RUNS, name).exists()
    }

    /// Whether a TaskRun of this name is recorded.
    pub fn has_task_run(&self, name: &str) -> bool {
        self.object_path(TASK_RUNS, name).exists()
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
            .open(&path)
            .map_err(io(&path))
    }

    /// The logs of a TaskRun's containers: (container, text), in the order
    /// the TaskRun's steps are listed in its status, then any others by name.
    ///
    /// # Errors
    /// A log that cannot be read.
    pub fn logs(&self, tr: &TaskRun) -> Result<Vec<(String, String)>, StoreError> {
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
        let mut out = Vec::new();
        for c in order {
            let p = self.log_path(name, &c);
            let text = fs::read_to_string(&p).map_err(io(&p))?;
            out.push((c, text));
        }
        Ok(out)
    }
}

/// `$XDG_STATE_HOME/tektite`, else `$HOME/.local/state/tektite`.
fn default_root() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("tektite"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".local/state/tektite"))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
///
/// # Errors
/// The temporary file cannot be written or renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))
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
        assert_eq!(s.task_runs().unwrap().len(), 2);
        assert_eq!(s.task_runs_of("p1").unwrap().len(), 1);
        let mut log = s.open_log("p1-a", "step-x").unwrap();
        writeln!(log, "hello").unwrap();
        assert_eq!(
            s.logs(&tr).unwrap(),
            vec![("step-x".to_string(), "hello\n".to_string())]
        );
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
