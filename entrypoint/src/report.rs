//! Writing what a step did: `report.json` and `exitCode` in the step's
//! metadata directory (always, atomically), and Tekton's termination
//! message (capped at 4 KiB by Kubernetes) for when the pod's annotations
//! cannot be patched.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use serde::Serialize;

use crate::contract::{Report, ResultKind, TERMINATION_MESSAGE_LIMIT};

/// Records a step's report; a trait so the step logic can be tested with fakes.
pub trait Reporter {
    /// # Errors
    /// A message naming what could not be written.
    fn report(&mut self, report: &Report) -> Result<(), String>;
}

/// Writes `path` through a temporary file and a rename, so readers never
/// see half a file.
///
/// # Errors
/// The I/O error, with the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        // The temporary file is made new, never opened through what is
        // there (a link another container left would make the rename put
        // the link in place, and the reader follow it): what is there is
        // removed (unlink does not follow links) and a file created with
        // O_EXCL | O_NOFOLLOW.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // No fsync: readers need the rename's atomicity, not durability
        // across a crash of the node (the pod would be gone anyway).
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// One entry of Tekton's termination message.
#[derive(Serialize)]
struct Entry<'a> {
    key: &'a str,
    value: String,
    #[serde(rename = "type")]
    kind: u8,
}

/// Tekton's termination-message JSON: results (type 1 task, 4 step) and
/// the internal `StartedAt`, `ExitCode` and `Reason` keys (type 3). When the
/// results do not fit in 4 KiB they are left out (the report file and the
/// annotations still carry them) and `Reason` says so.
pub fn termination_message(report: &Report) -> String {
    let internal = |key, value: String| Entry {
        key,
        value,
        kind: 3,
    };
    let mut entries = vec![
        internal("StartedAt", report.started_at.clone()),
        internal("ExitCode", report.exit_code.to_string()),
        internal("Reason", format!("{:?}", report.reason)),
    ];
    for r in &report.results {
        entries.push(Entry {
            key: &r.name,
            value: r.value.clone(),
            kind: match r.kind {
                ResultKind::Task => 1,
                ResultKind::Step => 4,
            },
        });
    }
    let full = serde_json::to_string(&entries).unwrap_or_default();
    if full.len() <= TERMINATION_MESSAGE_LIMIT {
        return full;
    }
    entries.truncate(3);
    entries[2].value = format!(
        "{:?}; results left out: over the 4 KiB termination message",
        report.reason
    );
    serde_json::to_string(&entries).unwrap_or_default()
}

/// Writes the report files, patches the pod when the API can be reached,
/// and writes the termination message when it cannot.
#[derive(Debug, Clone)]
pub struct FileReporter {
    pub step_metadata_dir: Option<String>,
    pub termination_path: String,
    pub api: Option<crate::patch::Api>,
}

impl Reporter for FileReporter {
    fn report(&mut self, report: &Report) -> Result<(), String> {
        if let Some(dir) = &self.step_metadata_dir {
            let dir = Path::new(dir);
            let json = serde_json::to_vec(report).map_err(|e| e.to_string())?;
            write_atomic(&dir.join("report.json"), &json)?;
            write_atomic(
                &dir.join("exitCode"),
                report.exit_code.to_string().as_bytes(),
            )?;
        }
        if let Some(api) = &self.api {
            let json = serde_json::to_string(report).map_err(|e| e.to_string())?;
            match api.report(&report.step, &json) {
                Ok(()) => return Ok(()),
                Err(e) => eprintln!(
                    "entrypoint: cannot report to the API server, using the termination message: {e}"
                ),
            }
        }
        if !self.termination_path.is_empty() {
            // Written in place, not renamed over: the kubelet bind-mounts this
            // file (a rename onto it fails with EBUSY, and a step running as
            // another user than root cannot create a file beside it). The
            // kubelet reads it only after the container exits.
            let path = Path::new(&self.termination_path);
            std::fs::write(path, termination_message(report))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Reason, ResultValue};

    fn report(value_len: usize) -> Report {
        Report {
            step: "s".into(),
            exit_code: 0,
            reason: Reason::Completed,
            message: String::new(),
            started_at: "2026-11-27T10:00:00.000000Z".into(),
            finished_at: String::new(),
            results: vec![ResultValue {
                name: "r".into(),
                kind: ResultKind::Task,
                value: "x".repeat(value_len),
            }],
        }
    }

    #[test]
    fn termination_message_in_tekton_format_and_capped() {
        let m = termination_message(&report(3));
        assert_eq!(
            m,
            r#"[{"key":"StartedAt","value":"2026-11-27T10:00:00.000000Z","type":3},{"key":"ExitCode","value":"0","type":3},{"key":"Reason","value":"Completed","type":3},{"key":"r","value":"xxx","type":1}]"#
        );
        let m = termination_message(&report(5000));
        assert!(m.len() <= TERMINATION_MESSAGE_LIMIT);
        assert!(m.contains("results left out"), "{m}");
    }
}
