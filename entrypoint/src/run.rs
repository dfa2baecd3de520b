//! Running the step's command: its own process group, signals forwarded to
//! the whole group, a timeout (SIGTERM, then SIGKILL after a grace period),
//! and every child reaped, since the wrapper may be PID 1 of its container.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code, or 128 + the signal that killed it.
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// It was stopped because the step timed out.
    pub timed_out: bool,
}

/// Runs commands; a trait so the step logic can be tested with fakes.
pub trait Runner {
    /// Runs `command` to its end.
    ///
    /// # Errors
    /// A message when the command cannot be started.
    fn run(&mut self, command: &[String], timeout: Option<Duration>) -> Result<Outcome, String>;

    /// Variables to set in the command's environment over the inherited
    /// ones (earlier steps' results put in place).
    fn set_env(&mut self, _env: Vec<(String, String)>) {}
}

/// The process group of the running command (0: none), shared with the
/// signal-forwarding thread, and a signal that came when there was none.
#[derive(Debug, Clone, Default)]
pub struct Group(pub Arc<AtomicI32>, Arc<AtomicI32>);

impl Group {
    /// Sends `sig` to the whole group, if a command is running.
    pub fn signal(&self, sig: Signal) -> bool {
        let pgid = self.0.load(Ordering::SeqCst);
        pgid > 0 && killpg(Pid::from_raw(pgid), sig).is_ok()
    }

    /// Keeps `sig` for the command about to start (a signal between the
    /// end of the wait and the start of the command is not lost).
    pub fn pend(&self, sig: Signal) {
        self.1.store(sig as i32, Ordering::SeqCst);
    }

    /// The command's group is `pgid` now: it gets any signal kept for it.
    fn started(&self, pgid: i32) {
        self.0.store(pgid, Ordering::SeqCst);
        if let Ok(sig) = Signal::try_from(self.1.swap(0, Ordering::SeqCst)) {
            self.signal(sig);
        }
    }
}

/// Runs real processes.
#[derive(Debug, Default)]
pub struct ProcessRunner {
    pub group: Group,
    /// Time between SIGTERM and SIGKILL when the step times out.
    pub grace_period: Duration,
    pub stdout_path: Option<String>,
    pub stderr_path: Option<String>,
    /// Set over the inherited environment ([`Runner::set_env`]).
    pub env: Vec<(String, String)>,
}

/// Copies a child's output to our own stream and a file.
fn tee(
    mut from: impl Read + Send + 'static,
    path: String,
    to_stderr: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(&path).ok();
        let mut buf = [0u8; 8192];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let _ = if to_stderr {
                std::io::stderr().write_all(&buf[..n])
            } else {
                std::io::stdout().write_all(&buf[..n])
            };
            if let Some(f) = file.as_mut() {
                let _ = f.write_all(&buf[..n]);
            }
        }
    })
}

/// SIGKILL to every process whose parent we are (`/proc/*/stat`); returns
/// how many, or `None` when `/proc` is not this PID namespace's (its
/// numbers would name other processes) or cannot be read.
fn kill_children() -> Option<usize> {
    let me = i32::try_from(std::process::id()).ok()?;
    if crate::procfs::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)?.pid != me {
        return None;
    }
    let children: Vec<i32> = crate::procfs::all()
        .into_iter()
        .filter(|s| s.ppid == me)
        .map(|s| s.pid)
        .collect();
    for pid in &children {
        let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    Some(children.len())
}

/// Kills and reaps every child until none is left: as a subreaper we get
/// each orphan of what we kill, down to the last descendant. Without a
/// `/proc` of our own, reaps what has already ended and stops there.
fn kill_and_reap_all() {
    loop {
        let flags = match kill_children() {
            Some(_) => None,
            None => Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        };
        match waitpid(Pid::from_raw(-1), flags) {
            Ok(WaitStatus::StillAlive) => return,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

impl Runner for ProcessRunner {
    fn set_env(&mut self, env: Vec<(String, String)>) {
        self.env = env;
    }

    fn run(&mut self, command: &[String], timeout: Option<Duration>) -> Result<Outcome, String> {
        let (program, args) = command.split_first().ok_or("no command")?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(self.env.iter().cloned())
            .process_group(0);
        if self.stdout_path.is_some() {
            cmd.stdout(Stdio::piped());
        }
        if self.stderr_path.is_some() {
            cmd.stderr(Stdio::piped());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {program:?}: {e}"))?;
        let pid = i32::try_from(child.id()).map_err(|_| "pid out of range".to_string())?;
        // The group id is the child's pid (process_group(0)).
        self.group.started(pid);
        let mut copiers = Vec::new();
        if let (Some(out), Some(path)) = (child.stdout.take(), self.stdout_path.clone()) {
            copiers.push(tee(out, path, false));
        }
        if let (Some(err), Some(path)) = (child.stderr.take(), self.stderr_path.clone()) {
            copiers.push(tee(err, path, true));
        }

        // The timer stops the group at the deadline, unless told the command ended.
        let timed_out = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let timer = timeout.map(|limit| {
            let group = self.group.clone();
            let grace = self.grace_period;
            let flag = Arc::clone(&timed_out);
            std::thread::spawn(move || {
                if done_rx.recv_timeout(limit) != Err(mpsc::RecvTimeoutError::Timeout) {
                    return;
                }
                flag.store(true, Ordering::SeqCst);
                group.signal(Signal::SIGTERM);
                if done_rx.recv_timeout(grace) == Err(mpsc::RecvTimeoutError::Timeout) {
                    group.signal(Signal::SIGKILL);
                }
            })
        });

        // Reap every child (orphans re-parent to us when we are PID 1) until ours ends.
        let status = loop {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => break (code, None),
                Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                    break (128 + sig as i32, Some(sig as i32));
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(format!("waiting for the command failed: {e}")),
            }
        };
        // Like a container ending: whatever the command left behind goes
        // too, in its group or not (we are a subreaper: what it forked and
        // left is ours now).
        self.group.signal(Signal::SIGKILL);
        self.group.0.store(0, Ordering::SeqCst);
        let _ = done_tx.send(());
        if let Some(t) = timer {
            let _ = t.join();
        }
        kill_and_reap_all();
        for c in copiers {
            let _ = c.join();
        }
        Ok(Outcome {
            exit_code: status.0,
            signal: status.1,
            timed_out: timed_out.load(Ordering::SeqCst),
        })
    }
}
