//! `tkt`: thin entry point; commands live in the library modules.

use std::process::ExitCode;

/// Loading YAML allocates a lot; mimalloc makes that markedly cheaper than
/// glibc's malloc (see the validate benchmark).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tektite_cli::main()
}
