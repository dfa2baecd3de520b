//! Helpers shared by the black-box tests: find and run the real `tkt`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `tests/` directory (these tests are built as part of `cli/`).
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests")
}

/// The `tkt` binary cargo built for this test run.
pub fn tkt_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tkt"))
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

/// The entrypoint binary the process runtime uses, built (once per test
/// binary) so that it is the one of this source tree.
pub fn entrypoint_env() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
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
            root.join("target/debug/entrypoint")
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
