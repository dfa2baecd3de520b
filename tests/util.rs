//! Helpers shared by the black-box tests: find and run the real `tkt`.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `tests/` directory (these tests are built as part of `cli/`).
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests")
}

/// The `tkt` binary cargo built for this test run, or `TEKTITE_TEST_TKT`
/// (a copy of it taken aside, where a shared target directory may see
/// another tree's build replace it).
pub fn tkt_path() -> PathBuf {
    std::env::var_os("TEKTITE_TEST_TKT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tkt")))
}

/// Runs `tkt` with `args` in `tests/`, with no standard input.
pub fn tkt(args: &[&str]) -> Output {
    tkt_stdin(args, None)
}

/// Runs `tkt` with `args` in `tests/`, feeding `stdin` when given.
pub fn tkt_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(tkt_path());
    cmd.args(args).current_dir(tests_dir()).env("NO_COLOR", "1");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn tkt");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for tkt")
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Files with `ext` in `dir`, sorted.
pub fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read corpus dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    v.sort();
    v
}

/// The entrypoint binary the runs use, built (once per test binary) so
/// that it is the one of this source tree: the debug build, or with
/// `TEKTITE_TEST_ENTRYPOINT=static` the static one an install has (podman
/// then plays pods without init containers and starts their containers
/// itself).
pub fn entrypoint_env() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if std::env::var("TEKTITE_TEST_ENTRYPOINT").is_ok_and(|v| v == "static") {
        return static_entrypoint();
    }
    BUILT
        .get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let ok = Command::new(cargo)
                .args(["build", "--quiet", "-p", "tektite-entrypoint"])
                .args(["--bin", "entrypoint"])
                .current_dir(&root)
                .status()
                .expect("run cargo");
            assert!(ok.success(), "cannot build the entrypoint");
            // Where cargo put it: a shared CARGO_TARGET_DIR, else the tree's.
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"))
                .join("debug/entrypoint")
        })
        .clone()
}

/// The static entrypoint as `hack/build-entrypoint.sh` builds it (once per
/// test binary; the script prints its path last), as an install has it.
pub fn static_entrypoint() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = tests_dir().join("..");
            let out = Command::new(root.join("hack/build-entrypoint.sh"))
                .current_dir(&root)
                .output()
                .expect("run hack/build-entrypoint.sh");
            assert!(
                out.status.success(),
                "cannot build the static entrypoint: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            root.join(text.lines().last().unwrap_or_default().trim())
        })
        .clone()
}

/// Whether the podman tests run here: they fail when they should and
/// cannot, unless `TEKTITE_SKIP_PODMAN=1`.
pub fn podman_ready() -> bool {
    if std::env::var_os("TEKTITE_SKIP_PODMAN").is_some_and(|v| v == "1") {
        eprintln!("TEKTITE_SKIP_PODMAN=1: podman test not run");
        return false;
    }
    let ok = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "podman is not installed: run hack/test.sh (or hack/setup-podman.sh and hack/images.sh), \
         or set TEKTITE_SKIP_PODMAN=1 to leave these tests out"
    );
    true
}

/// `tkt run` on runtime `rt`: `podman`, `process` (a mount namespace, as
/// root) or `rewrite` (the process runtime as it runs without root: paths
/// rewritten into the run directory), in `tests/`, with no colours and the
/// entrypoint of this source tree.
pub fn tkt_run(rt: &str) -> Command {
    let mut cmd = Command::new(tkt_path());
    let runtime = if rt == "rewrite" { "process" } else { rt };
    cmd.args(["run", "--runtime", runtime])
        .current_dir(tests_dir())
        .env("NO_COLOR", "1")
        .env("TEKTITE_ENTRYPOINT", entrypoint_env())
        .env(
            "TEKTITE_PROCESS_REWRITE",
            if rt == "rewrite" { "1" } else { "0" },
        )
        .stdin(Stdio::null());
    cmd
}

/// The directory on the tmpfs (`tektite_local::tmpfs`) of the run store
/// at `state`, if this machine has one.
pub fn fast_store_dir(state: &Path) -> Option<PathBuf> {
    let base = tektite_local::tmpfs::base()?;
    Some(tektite_local::tmpfs::store_dir(base, state))
}

/// A scratch directory with a run store in it; removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("tkt-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn state(&self) -> PathBuf {
        self.0.join("state")
    }
    pub fn state_arg(&self) -> String {
        self.state().to_string_lossy().into_owned()
    }
    /// Writes `text` to `name` in the scratch directory; returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
    /// Records of `kind` (`pipelineruns`, `taskruns`) in the store.
    pub fn records(&self, kind: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.state().join(kind))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        v.sort();
        v
    }
    /// The store's directory on the tmpfs, if this machine has one.
    pub fn fast(&self) -> Option<PathBuf> {
        fast_store_dir(&self.state())
    }
    /// What is left under `work/` and `live/`, and in the store's
    /// directory on the tmpfs (as `fast/`).
    pub fn leftovers(&self) -> Vec<String> {
        let fast = self.fast().map(|f| ("fast", f));
        ["work", "live"]
            .iter()
            .map(|d| (*d, self.state().join(d)))
            .chain(fast)
            .flat_map(|(d, dir)| {
                std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(move |e| format!("{d}/{}", e.file_name().to_string_lossy()))
            })
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(f) = self.fast() {
            let _ = std::fs::remove_dir_all(f);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits for a child, killing it (and failing) if it hangs: a guard, not a
/// timing assertion.
pub fn wait_guarded(mut child: Child, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!("{what} did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The final object `-o json` printed.
pub fn object(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not the run as JSON ({e}); stderr:\n{}",
            text(&o.stderr)
        )
    })
}

pub fn reason(v: &Value) -> String {
    v["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Succeeded"))
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default()
        .to_string()
}
