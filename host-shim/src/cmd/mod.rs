//! The `ephemera` command line.

pub mod identity;
pub mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ephemera: zero-trust workload identity inside the proxy.
#[derive(Debug, Parser)]
#[command(name = "ephemera", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Provision identities in the spiffile layout.
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Mint and verify JWT-SVIDs with this workload's identity.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// Exit code of a rejected token or failed check.
pub const EXIT_REJECTED: u8 = 1;
/// Exit code of a usage or configuration error.
pub const EXIT_CONFIG: u8 = 2;

impl Cli {
    /// Runs the command; errors are printed as one line on stderr.
    pub fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Identity(c) => c.run(),
            Command::Token(c) => c.run(),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => {
                eprintln!("{}", failure.message);
                ExitCode::from(failure.code)
            }
        }
    }
}

/// A command's failure: one line for stderr and an exit code.
#[derive(Debug)]
pub struct Failure {
    /// The line to print.
    pub message: String,
    /// The exit code.
    pub code: u8,
}

impl Failure {
    /// A configuration or usage error.
    pub fn config(error: impl std::fmt::Display) -> Self {
        Self {
            message: format!("error: {error}"),
            code: EXIT_CONFIG,
        }
    }

    /// A rejection (token, check).
    pub fn rejected(error: impl std::fmt::Display) -> Self {
        Self {
            message: format!("rejected: {error}"),
            code: EXIT_REJECTED,
        }
    }
}
