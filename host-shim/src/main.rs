//! The `ephemera` binary.

use std::process::ExitCode;

use clap::Parser as _;
use ephemera_shim::cmd::Cli;

fn main() -> ExitCode {
    // TLS to providers (OpenBao/Vault, STS) uses rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Cli::parse().run()
}
