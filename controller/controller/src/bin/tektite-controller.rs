//! `tektite-controller`: the TaskRun and PipelineRun controllers in one
//! process, until SIGTERM or Ctrl-C (see `tektite_controller::app`).

use std::process::ExitCode;

use clap::Parser;
use tektite_controller::app::{self, Options};

// Decoding watch events allocates a lot; mimalloc also gives freed memory
// back to the system more readily than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let opts = Options::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .init();
    match app::run(opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tektite-controller: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}
