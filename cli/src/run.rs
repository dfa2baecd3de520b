//! `tkt run`: runs TaskRuns and PipelineRuns on this machine.

use std::io::Write;

use clap::Parser;

/// `tkt run` arguments.
#[derive(Debug, Parser)]
pub struct Args {}

/// Runs `tkt run`.
///
/// # Errors
/// Failures to write output.
pub fn run(_args: &Args, _out: &mut impl Write) -> anyhow::Result<u8> {
    anyhow::bail!("not built yet")
}
