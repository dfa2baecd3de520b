//! Helpers shared by the black-box tests: find and run the real `tkt`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `tests/` directory.
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `tkt` binary next to this test's own executable (`target/<profile>/tkt`).
pub fn tkt_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join("tkt");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p tektite-cli` first (hack/test.sh does)",
        bin.display()
    );
    bin
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
