//! Waiting for the previous step's marker file.
//!
//! The directory of each wait file is watched with inotify, so the next
//! step starts as soon as the marker appears (Tekton polls once a second).
//! Where inotify is unavailable a 10 ms poll takes over. A predecessor's
//! `<file>.err` means it failed: this step is skipped.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Every wait file is there (and non-empty, when asked).
    Ready,
    /// This failure marker of a previous step exists.
    Skip(String),
    /// A signal arrived while waiting.
    Interrupted,
}

/// Waits for files; a trait so the step logic can be tested with fakes.
pub trait Waiter {
    fn wait(&mut self, files: &[String], content: bool) -> WaitOutcome;
}

/// The poll interval when inotify cannot be used.
pub const POLL_FALLBACK: Duration = Duration::from_millis(10);
/// Even with inotify, look again this often (a safety net for events lost
/// on unusual file systems; it costs nothing while events arrive).
const SAFETY_NET: Duration = Duration::from_millis(250);

/// Waits on the file system, woken by inotify or, failing that, a short poll.
#[derive(Debug)]
pub struct FsWaiter {
    /// Readable when the signal thread wants the wait to stop.
    pub interrupt: Option<UnixStream>,
    /// Force the polling fallback (tests, benchmarks).
    pub force_poll: bool,
    /// The polling interval when inotify is not used.
    pub poll_interval: Duration,
    /// Kept open for the life of the process: closing an inotify instance
    /// waits for an RCU grace period, which cost 5–15 ms of handoff here
    /// when it was closed before starting the command.
    inotify: Option<Inotify>,
}

impl FsWaiter {
    pub fn new(interrupt: Option<UnixStream>, force_poll: bool, poll_interval: Duration) -> Self {
        FsWaiter {
            interrupt,
            force_poll,
            poll_interval,
            inotify: None,
        }
    }
}

fn ready(file: &str, content: bool) -> bool {
    match std::fs::metadata(file) {
        Ok(m) => !content || m.len() > 0,
        Err(_) => false,
    }
}

impl FsWaiter {
    fn interrupted(&self) -> bool {
        let Some(s) = &self.interrupt else {
            return false;
        };
        let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Sleeps until something may have changed: an inotify event, the
    /// interrupt, or `timeout`. Returns false when interrupted.
    fn sleep(&self, inotify: Option<&Inotify>, timeout: Duration) -> bool {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = Vec::with_capacity(2);
        if let Some(i) = inotify {
            fds.push(PollFd::new(i.as_fd(), PollFlags::POLLIN));
        }
        if let Some(s) = &self.interrupt {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, PollTimeout::from(ms));
        let woke_by_interrupt = self.interrupt.is_some()
            && fds
                .last()
                .and_then(PollFd::revents)
                .is_some_and(|r| r.contains(PollFlags::POLLIN));
        if let Some(i) = inotify {
            // Empty the queue once (what changed is checked on the file
            // system); a busy directory must not keep us reading forever.
            let _ = i.read_events();
        }
        !woke_by_interrupt
    }

    fn wait_one(&mut self, file: &str, content: bool) -> WaitOutcome {
        let err = crate::contract::err_path(file);
        let dir = Path::new(file)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // The directory watched: the wait file's, or while that does not exist
        // yet, its nearest existing ancestor (to learn when it is created).
        let mut watched: Option<&Path> = None;
        loop {
            let target = dir.ancestors().find(|a| a.is_dir());
            if !self.force_poll && target.is_some() && target != watched {
                // Watch before looking, so a marker written in between is not missed.
                if self.inotify.is_none() {
                    self.inotify =
                        Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok();
                }
                let flags = AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_MODIFY
                    | AddWatchFlags::IN_ATTRIB;
                if let (Some(i), Some(t)) = (self.inotify.as_ref(), target)
                    && i.add_watch(t, flags).is_ok()
                {
                    watched = target;
                }
            }
            let watching = watched.is_some();
            let inotify = if watching {
                self.inotify.as_ref()
            } else {
                None
            };
            if Path::new(&err).exists() {
                return WaitOutcome::Skip(err);
            }
            if ready(file, content) {
                return WaitOutcome::Ready;
            }
            if self.interrupted() {
                return WaitOutcome::Interrupted;
            }
            let timeout = if inotify.is_some() {
                SAFETY_NET
            } else {
                self.poll_interval
            };
            if !self.sleep(inotify, timeout) {
                return WaitOutcome::Interrupted;
            }
        }
    }
}

impl Waiter for FsWaiter {
    fn wait(&mut self, files: &[String], content: bool) -> WaitOutcome {
        for f in files {
            match self.wait_one(f, content) {
                WaitOutcome::Ready => {}
                other => return other,
            }
        }
        WaitOutcome::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_skip_and_interrupt() {
        let dir = std::env::temp_dir().join(format!("ep-wait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("out").to_string_lossy().into_owned();
        for force_poll in [false, true] {
            let _ = std::fs::remove_file(&marker);
            let _ = std::fs::remove_file(format!("{marker}.err"));
            let m = marker.clone();
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                std::fs::write(&m, "").unwrap();
            });
            let mut w = FsWaiter::new(None, force_poll, POLL_FALLBACK);
            assert_eq!(
                w.wait(std::slice::from_ref(&marker), false),
                WaitOutcome::Ready
            );
            writer.join().unwrap();

            std::fs::remove_file(&marker).unwrap();
            std::fs::write(format!("{marker}.err"), "").unwrap();
            assert_eq!(
                w.wait(std::slice::from_ref(&marker), false),
                WaitOutcome::Skip(format!("{marker}.err"))
            );
            std::fs::remove_file(format!("{marker}.err")).unwrap();

            let (a, b) = UnixStream::pair().unwrap();
            let mut w = FsWaiter::new(Some(b), force_poll, POLL_FALLBACK);
            std::io::Write::write_all(&mut &a, b"x").unwrap();
            assert_eq!(
                w.wait(std::slice::from_ref(&marker), false),
                WaitOutcome::Interrupted
            );
        }
        // A marker whose directory is created later is still seen.
        let late = dir.join("later/out").to_string_lossy().into_owned();
        let l = late.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            std::fs::create_dir_all(Path::new(&l).parent().unwrap()).unwrap();
            std::fs::write(&l, "x").unwrap();
        });
        let mut w = FsWaiter::new(None, false, Duration::from_secs(3600));
        assert_eq!(
            w.wait(std::slice::from_ref(&late), true),
            WaitOutcome::Ready
        );
        writer.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
