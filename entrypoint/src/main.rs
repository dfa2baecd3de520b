//! The step wrapper: `entrypoint <flags> -- <command>` (see README.md).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use signal_hook::consts::signal::*;
use signal_hook::iterator::Signals;
use tektite_entrypoint::container;
use tektite_entrypoint::exit;
use tektite_entrypoint::flags;
use tektite_entrypoint::report::FileReporter;
use tektite_entrypoint::run::{Group, ProcessRunner};
use tektite_entrypoint::step;
use tektite_entrypoint::subcommands;
use tektite_entrypoint::wait::FsWaiter;

/// Signals forwarded to the command's process group.
const FORWARDED: &[i32] = &[SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2];

/// Signals the command must start with at their default action even when
/// we were started with them ignored (a `nohup`, a runtime's own settings):
/// exec resets a caught signal to its default but keeps an ignored one
/// ignored, so each gets a handler of ours that does nothing. SIGPIPE is
/// reset by std in the child.
const RESET: &[i32] = &[
    SIGALRM,
    SIGCHLD,
    SIGTSTP,
    SIGTTIN,
    SIGTTOU,
    SIGURG,
    SIGWINCH,
    SIGXCPU,
    SIGXFSZ,
    SIGVTALRM,
    SIGPROF,
    SIGIO,
    nix::libc::SIGPWR,
];

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let next = match args.first().map(String::as_str) {
        Some("container") => container::main(&args[1..]),
        Some("container-init") => container::init(&args[1..]),
        _ => return wrapper(&args),
    };
    match next {
        container::Next::Exit(c) => code(c),
        // A container whose command is this binary: no need to start it again.
        container::Next::Wrapper(args) => wrapper(&args),
    }
}

/// The step wrapper (or one of Tekton's subcommands) with its arguments.
fn wrapper(args: &[String]) -> ExitCode {
    // What the process runtime runs to see that namespaces can be made.
    if args == ["container-ok"] {
        return ExitCode::SUCCESS;
    }
    if let Some(result) = subcommands::dispatch(args) {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("entrypoint: {e}");
                code(exit::IO)
            }
        };
    }
    let flags = match flags::parse(args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("entrypoint: {e}");
            eprintln!(
                "usage: entrypoint [-wait_file F,…] [-post_file F] [-on_error continue] … -- COMMAND [ARG…]"
            );
            return code(exit::USAGE);
        }
    };

    // The command inherits our signal mask and ignored signals: it must
    // start as a plain shell would, with nothing blocked and every signal at
    // its default, or a step's `trap … TERM` never runs. So nothing is ever
    // blocked here (signals are caught by handlers and read from a pipe by
    // one thread), and whatever mask we were given is cleared.
    if let Err(e) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None) {
        eprintln!("entrypoint: cannot unblock signals: {e}");
        return code(exit::IO);
    }
    let reset = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for s in RESET {
        if let Err(e) = signal_hook::flag::register(*s, reset.clone()) {
            eprintln!("entrypoint: cannot reset signal {s}: {e}");
            return code(exit::IO);
        }
    }
    let mut signals = match Signals::new(FORWARDED) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("entrypoint: cannot take signals: {e}");
            return code(exit::IO);
        }
    };
    // What the command forks and leaves behind becomes ours (not init's),
    // so it is reaped and stopped with the step, as in a container.
    let _ = nix::sys::prctl::set_child_subreaper(true);
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
            for sig in signals.forever() {
                let Ok(sig) = Signal::try_from(sig) else {
                    continue;
                };
                // Forwarded to the running command; else it ends the wait for
                // our turn, and is kept for a command about to start.
                if !group.signal(sig) {
                    group.pend(sig);
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
        env: Vec::new(),
    };
    let mut reporter = FileReporter {
        step_metadata_dir: flags.step_metadata_dir.clone(),
        termination_path: flags.termination_path.clone(),
        api: tektite_entrypoint::patch::Api::from_env(),
    };
    code(step::run(&flags, &mut waiter, &mut runner, &mut reporter))
}
