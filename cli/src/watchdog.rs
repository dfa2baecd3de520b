//! The watchdog of a `tkt run`: a process of its own that outlives its
//! `tkt` whatever ends it (`kill -9`, a crash, a third Ctrl-C) and then
//! cleans up after it at once: it stops what that `tkt`'s unfinished runs
//! started and marks them failed (`tektite_local::live::recover_abandoned`).
//!
//! It learns that its `tkt` is gone from its standard input: a pipe whose
//! only writer is that `tkt`, so it reads end-of-file when the kernel
//! closes it. A `tkt` ending well writes [`DONE`] first: the watchdog then
//! recovers what that `tkt` left unfinished (nothing, normally) and exits
//! without waiting for it. It sits in a process group of its own, so the
//! terminal's Ctrl-C and hang-up do not reach it; it writes nothing.

use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

use tektite_local::live;
use tektite_local::procs::ProcId;
use tektite_local::store::Store;

/// What a `tkt` ending well writes to its watchdog before closing the pipe.
pub const DONE: &[u8] = b"done\n";

/// Arguments of the hidden `tkt __watchdog`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long = "state-dir")]
    state_dir: PathBuf,
    #[arg(long = "owner-pid")]
    owner_pid: i32,
    #[arg(long = "owner-start")]
    owner_start: u64,
}

/// The running watchdog; dropping it (this `tkt` ending well) lets it go.
#[derive(Debug)]
pub struct Watchdog {
    stdin: Option<ChildStdin>,
    child: Child,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(DONE);
        }
        let _ = self.child.wait();
    }
}

/// Starts the watchdog of this process over `store`; `None` when it cannot
/// (the journals are then recovered by the next store command).
pub fn start(store: &Store) -> Option<Watchdog> {
    let exe = std::env::current_exe().ok()?;
    let owner = ProcId::current()?;
    let mut child = Command::new(exe)
        .arg("__watchdog")
        .arg("--state-dir")
        .arg(store.root())
        .args(["--owner-pid", &owner.pid.to_string()])
        .args(["--owner-start", &owner.start.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    let stdin = child.stdin.take();
    Some(Watchdog { stdin, child })
}

/// `tkt __watchdog`: waits for its `tkt` to end, then recovers that
/// `tkt`'s runs that it did not finish.
pub fn run(args: &Args) -> u8 {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match std::io::stdin().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let owner = ProcId {
        pid: args.owner_pid,
        start: args.owner_start,
    };
    // Killed: the pipe closes early in a process's exit, and the signals
    // its children get when it dies are sent later. Wait for the exit to be
    // over. (Ending well, it waits for us.)
    if got != DONE {
        while owner.alive() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    if let Ok(store) = Store::existing(Some(&args.state_dir)) {
        live::recover_abandoned(&store, Some(owner));
    }
    0
}
