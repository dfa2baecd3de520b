//! The step wrapper: `entrypoint <flags> -- <command>` (see README.md).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal};
use tektite_entrypoint::exit;
use tektite_entrypoint::flags;
use tektite_entrypoint::report::FileReporter;
use tektite_entrypoint::run::{Group, ProcessRunner};
use tektite_entrypoint::step;
use tektite_entrypoint::subcommands;
use tektite_entrypoint::wait::FsWaiter;

/// Signals forwarded to the command's process group.
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(result) = subcommands::dispatch(&args) {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("entrypoint: {e}");
                code(exit::IO)
            }
        };
    }
    let flags = match flags::parse(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("entrypoint: {e}");
            eprintln!(
                "usage: entrypoint [-wait_file F,…] [-post_file F] [-on_error continue] … -- COMMAND [ARG…]"
            );
            return code(exit::USAGE);
        }
    };

    // Block the forwarded signals in every thread (threads inherit the mask
    // of the one that starts them) and take them in one thread with sigwait.
    // The command starts with an empty mask: std resets it in the child.
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    if let Err(e) = set.thread_block() {
        eprintln!("entrypoint: cannot block signals: {e}");
        return code(exit::IO);
    }
    let group = Group::default();
    let (wake, interrupt) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("entrypoint: {e}");
            return code(exit::IO);
        }
    };
    {
        let group = group.clone();
        std::thread::spawn(move || {
            while let Ok(sig) = set.wait() {
                // Forwarded to the running command, or ends the wait for our turn.
                if !group.signal(sig) {
                    let _ = (&wake).write_all(&[1]);
                }
            }
        });
    }

    // TEKTITE_ENTRYPOINT_POLL_MS forces polling at that interval instead of
    // inotify (the handoff benchmark's baselines).
    let poll_ms = std::env::var("TEKTITE_ENTRYPOINT_POLL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let mut waiter = FsWaiter::new(
        Some(interrupt),
        poll_ms.is_some(),
        poll_ms.map_or(
            tektite_entrypoint::wait::POLL_FALLBACK,
            std::time::Duration::from_millis,
        ),
    );
    let mut runner = ProcessRunner {
        group,
        grace_period: flags.grace_period,
        stdout_path: flags.stdout_path.clone(),
        stderr_path: flags.stderr_path.clone(),
    };
    let mut reporter = FileReporter {
        step_metadata_dir: flags.step_metadata_dir.clone(),
        termination_path: flags.termination_path.clone(),
        api: tektite_entrypoint::patch::Api::from_env(),
    };
    code(step::run(&flags, &mut waiter, &mut runner, &mut reporter))
}
