//! `tkt pipelinerun|pr` and `tkt taskrun|tr`: list, describe and show logs
//! of the runs in the local run store.

use std::io::Write;

use clap::Parser;

/// Which kind of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PipelineRun,
    TaskRun,
}

/// Arguments (filled in by the inspect commands).
#[derive(Debug, Parser)]
pub struct Args {}

/// Runs an inspect command.
///
/// # Errors
/// Failures to read the store or to write output.
pub fn run(_kind: Kind, _args: &Args, _out: &mut impl Write) -> anyhow::Result<u8> {
    anyhow::bail!("not built yet")
}
