//! `tkt`, the Tektite command line, in the spirit of `tkn`.
//!
//! What it is for: commands a user types (`tkt validate`, and later `run`,
//! `logs`, `list`, …). Decisions live in `tektite-api` (and the engine);
//! this crate parses flags, reads files, prints and picks the exit code.
//!
//! Exit codes follow DESIGN.md: 0 success, 1 a run failed, 2 invalid input
//! or usage, 130 interrupted.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod inspect;
pub mod run;
pub mod validate;

/// Exit code for invalid input or usage.
pub const EXIT_INVALID: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "tkt",
    version,
    about = "Tektite: run Tekton pipelines anywhere",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check Tekton YAML/JSON files (Task, Pipeline, TaskRun, PipelineRun; v1 and v1beta1)
    Validate(validate::Args),
    /// Run TaskRuns and PipelineRuns (or a Task/Pipeline with -p/-w) on this machine
    Run(Box<run::Args>),
    /// Inspect the PipelineRuns in the local run store (list, describe, logs)
    #[command(name = "pipelinerun", visible_alias = "pr")]
    PipelineRun(inspect::Args),
    /// Inspect the TaskRuns in the local run store (list, describe, logs)
    #[command(name = "taskrun", visible_alias = "tr")]
    TaskRun(inspect::Args),
}

/// Parses arguments, runs the command, and turns errors into exit codes.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_INVALID } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // `tkt run` prints logs from other threads: it must not hold the lock.
    if let Command::Run(args) = &cli.command {
        let mut out = std::io::stdout();
        let result = run::run(args, &mut out);
        let _ = out.flush();
        return finish(result);
    }
    let mut out = std::io::stdout().lock();
    let result = match cli.command {
        Command::Validate(args) => validate::run(&args, &mut out),
        Command::Run(_) => unreachable!("handled above"),
        Command::PipelineRun(args) => inspect::run(inspect::Kind::PipelineRun, &args, &mut out),
        Command::TaskRun(args) => inspect::run(inspect::Kind::TaskRun, &args, &mut out),
    };
    let _ = out.flush();
    finish(result)
}

/// The exit code of a command's result; errors are printed.
fn finish(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tkt: {e:#}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// A closed stdout (`tkt … | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
