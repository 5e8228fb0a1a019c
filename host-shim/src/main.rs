//! The `ephemera` binary.

use std::process::ExitCode;

use clap::Parser as _;
use ephemera_shim::cmd::Cli;

fn main() -> ExitCode {
    Cli::parse().run()
}
