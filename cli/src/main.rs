//! `tkt`: thin entry point; commands live in the library modules.

use std::process::ExitCode;

fn main() -> ExitCode {
    tektite_cli::main()
}
