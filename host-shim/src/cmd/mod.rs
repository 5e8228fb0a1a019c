//! The `ephemera` command line.

pub mod identity;
pub mod ledger;
pub mod mesh;
pub mod oci;
pub mod secrets;
pub mod serve;
pub mod sidecar;
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
    /// Serve this workload's identity to the filter, reloading on file changes.
    Serve(serve::ServeArgs),
    /// Run a workload's sidecar locally: the shim and Envoy with the filter.
    Sidecar(sidecar::RunArgs),
    /// Print the Envoy bootstrap for a shim run separately (`ephemera serve`).
    Bootstrap(sidecar::BootstrapArgs),
    /// Check and read the audit ledger.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Secret URIs.
    #[command(subcommand)]
    Secrets(secrets::SecretsCommand),
    /// Package the filter as an OCI image.
    #[command(subcommand)]
    Oci(oci::OciCommand),
    /// Kubernetes objects for a service mesh.
    #[command(subcommand)]
    Mesh(mesh::MeshCommand),
    /// Add the shim (and, without a mesh, Envoy) to every pod template of
    /// a manifest.
    Inject(mesh::InjectArgs),
    /// Exit 0 when the shim is healthy (a container probe).
    Probe(mesh::ProbeArgs),
    /// Serve the injection as a mutating admission webhook (HTTPS).
    Webhook(mesh::WebhookArgs),
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
            Command::Serve(c) => c.run(),
            Command::Sidecar(c) => c.run(),
            Command::Bootstrap(c) => c.run(),
            Command::Ledger(c) => c.run(),
            Command::Secrets(c) => c.run(),
            Command::Oci(c) => c.run(),
            Command::Mesh(c) => c.run(),
            Command::Inject(c) => c.run(),
            Command::Probe(c) => c.run(),
            Command::Webhook(c) => c.run(),
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

/// Logs to stderr; `RUST_LOG` overrides the default `info`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// A single-threaded Tokio runtime: the shim's work is small and I/O bound.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::config)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
