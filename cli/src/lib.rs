//! `tkt`, the Tektite command line, in the spirit of `tkn`.
//!
//! What it is for: commands a user types (`tkt validate`, and later `run`,
//! `logs`, `list`, …). Decisions live in `tektite-api` (and the engine);
//! this crate parses flags, reads files, prints and picks the exit code.
//!
//! Exit codes (docs/cli.md): 0 success, 1 a run failed, 2 invalid input
//! or usage, 130 interrupted.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod archive;
pub mod bundle;
pub mod cluster;
pub mod cluster_run;
pub mod dora;
pub mod files;
pub mod follow;
pub mod inspect;
pub mod labels;
pub mod queue;
pub mod remote;
pub mod rerun;
pub mod run;
pub mod start;
pub mod stepactions;
pub mod traces;
pub mod validate;
pub mod values;
pub mod watchdog;
pub mod workspaces;

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
    /// PipelineRuns of the local run store or a cluster (list, describe, logs, cancel, rerun, delete)
    #[command(name = "pipelinerun", visible_alias = "pr")]
    PipelineRun(inspect::Args),
    /// TaskRuns of the local run store or a cluster (list, describe, logs, cancel, rerun, delete)
    #[command(name = "taskrun", visible_alias = "tr")]
    TaskRun(inspect::Args),
    /// Pipelines of a cluster, or of the catalog and --task-dir folders (list, describe, start)
    #[command(name = "pipeline", visible_alias = "p")]
    Pipeline(start::Args),
    /// Tasks of a cluster, or of the catalog and --task-dir folders (list, describe, start)
    #[command(name = "task", visible_alias = "t")]
    Task(start::Args),
    /// Tekton bundles: push Tasks, Pipelines and StepActions to a registry, list one
    Bundle(bundle::Args),
    /// DORA indicators of the deployments (PipelineRuns labelled tektite.dev/environment)
    Dora(dora::Args),
    /// (internal) cleans up after a `tkt run` that ended before its runs
    #[command(name = "__watchdog", hide = true)]
    Watchdog(watchdog::Args),
}

/// Standard output that never fails a command: the exit code says how the
/// command went, whatever became of its output. A reader that went away
/// (`tkt … | head`) is not an error; another failure (`> /dev/full`) is
/// said once on standard error. Output after a failure is dropped.
#[derive(Debug)]
struct Stdout {
    failed: bool,
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.failed
            && let Err(e) = std::io::stdout().lock().write_all(buf)
        {
            self.failed = true;
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                let _ = writeln!(std::io::stderr(), "tkt: cannot write standard output: {e}");
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.failed && std::io::stdout().lock().flush().is_err() {
            self.failed = true;
        }
        Ok(())
    }
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
    let mut out = Stdout { failed: false };
    let result = match cli.command {
        Command::Validate(args) => validate::run(&args, &mut out),
        Command::Run(args) => run::run(&args, &mut out),
        Command::Bundle(args) => bundle::run(&args, &mut out),
        Command::Dora(args) => dora::run(&args, &mut out),
        Command::PipelineRun(args) => inspect::run(inspect::Kind::PipelineRun, &args, &mut out),
        Command::TaskRun(args) => inspect::run(inspect::Kind::TaskRun, &args, &mut out),
        Command::Pipeline(args) => start::run(start::DefKind::Pipeline, &args, &mut out),
        Command::Task(args) => start::run(start::DefKind::Task, &args, &mut out),
        Command::Watchdog(args) => Ok(watchdog::run(&args)),
    };
    let _ = out.flush();
    finish(result)
}

/// A line for the user on standard error; a closed one is not an error.
pub(crate) fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The exit code of a command's result; errors are printed.
fn finish(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            note(&format!("tkt: {e:#}"));
            ExitCode::from(EXIT_INVALID)
        }
    }
}
