//! Processes as `/proc` shows them: who is alive, who belongs to a session,
//! and stopping a whole session, whatever its members did to their process
//! groups.
//!
//! A process is named by its pid and its start time (clock ticks since
//! boot), so a pid the kernel gave to another process since is never
//! mistaken for it: the run store records containers and owners this way,
//! and a later `tkt` can tell whether they still run.

use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use tektite_entrypoint::procfs::{Stat, stat};

/// A process named so that a reused pid is not taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

impl ProcId {
    /// The process `pid` as it is now.
    pub fn of(pid: i32) -> Option<ProcId> {
        stat(pid).map(|s| ProcId {
            pid,
            start: s.start,
        })
    }

    /// This process.
    pub fn current() -> Option<ProcId> {
        ProcId::of(std::process::id().try_into().ok()?)
    }

    /// Whether it still runs (a zombie does not).
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && s.state != 'Z')
    }
}

/// Every live process of session `sid` that started at `since` or later
/// (ticks since boot): the members of a session we made, not of one that
/// took its number since.
pub fn session_members(sid: i32, since: u64) -> Vec<i32> {
    tektite_entrypoint::procfs::all()
        .into_iter()
        .filter(|s| s.session == sid && s.start >= since && s.state != 'Z')
        .map(|s| s.pid)
        .collect()
}

/// Sends `sig` to every live process of a session (see [`session_members`]);
/// returns how many there were.
pub fn signal_session(sid: i32, since: u64, sig: Signal) -> usize {
    let members = session_members(sid, since);
    for pid in &members {
        let _ = kill(Pid::from_raw(*pid), sig);
    }
    members.len()
}

/// Kills a session for good: SIGKILL to its members until none is left
/// (a member may fork while the first ones die). With `leader_last`, the
/// leader goes after the others, given a moment to end by itself: a step
/// wrapper leading the session then sees its command killed, reaps what is
/// left and records how it ended. (An `unshare` leading it goes first
/// instead: its PID namespace dies with it, and it would complain about a
/// child killed under it.)
///
/// A session number taken since by a process that is not the leader we
/// knew (same pid, another start time) is not ours: nothing is done. While
/// a member of our session lives, its number cannot be taken.
pub fn kill_session(sid: i32, since: u64, leader_last: bool) {
    let leader = ProcId {
        pid: sid,
        start: since,
    };
    if stat(sid).is_some_and(|s| s.start != since) {
        return;
    }
    if !leader_last && leader.alive() {
        let _ = kill(Pid::from_raw(sid), Signal::SIGKILL);
    }
    let others = |pids: Vec<i32>| pids.into_iter().filter(|p| *p != sid).collect::<Vec<_>>();
    for _ in 0..50 {
        let members = others(session_members(sid, since));
        if members.is_empty() {
            break;
        }
        for pid in members {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for _ in 0..100 {
        if !leader_last || !leader.alive() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for _ in 0..50 {
        if signal_session(sid, since, Signal::SIGKILL) == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A command that runs `program` in a session of its own (so that all it
/// starts can be found, whatever it does to its process groups), killed
/// when the thread that starts it ends (so that it does not outlive a
/// `tkt` that dies): `setpriv --pdeathsig KILL -- setsid -- program`.
/// The caller must not make it a process group leader (setsid would fork).
pub fn session_command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--", "setsid", "--"])
        .arg(program);
    cmd
}

/// Whether `/proc` is there to be read (it is on Linux).
pub fn available() -> bool {
    Path::new("/proc/self/stat").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session number now led by another process than the one recorded
    /// (same pid, another start time: the number was reused) is left
    /// alone. Here that other process is this test: it must live.
    #[test]
    fn a_reused_session_number_is_not_killed() {
        let me = ProcId::current().unwrap();
        kill_session(me.pid, me.start + 1, false);
        kill_session(me.pid, me.start + 1, true);
        assert!(me.alive());
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_is_not() {
        let me = ProcId::current().unwrap();
        assert!(me.alive());
        assert!(
            !ProcId {
                start: me.start + 1,
                ..me
            }
            .alive()
        );
    }
}
