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
