//! `ephemera identity …`: provisioning in the spiffile layout.

use std::path::PathBuf;

use clap::Subcommand;

use super::Failure;
use crate::identity::provision::Root;

/// Identity provisioning commands.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Create a root with an empty bundle for a trust domain.
    Init {
        /// The provisioning root directory.
        root: PathBuf,
        /// The trust domain, e.g. example.org.
        #[arg(long)]
        trust_domain: String,
    },
    /// Add a service (idempotent: an existing key is kept).
    Add {
        /// The provisioning root directory.
        root: PathBuf,
        /// The service name (the SPIFFE ID path).
        name: String,
    },
    /// Give a service a new key; the old one stays in the bundle for overlap.
    Rotate {
        /// The provisioning root directory.
        root: PathBuf,
        /// The service name.
        name: String,
        /// Drop the old keys from the bundle now.
        #[arg(long)]
        drop_old: bool,
    },
    /// Revoke a service: remove it from the bundle and delete its files.
    Remove {
        /// The provisioning root directory.
        root: PathBuf,
        /// The service name.
        name: String,
    },
    /// Print the environment variables pointing a workload at its material.
    Env {
        /// The provisioning root directory.
        root: PathBuf,
        /// The service name.
        name: String,
    },
}

impl IdentityCommand {
    /// Runs the command.
    pub fn run(self) -> Result<(), Failure> {
        match self {
            Self::Init { root, trust_domain } => {
                Root::new(&root)
                    .init(&trust_domain)
                    .map_err(Failure::config)?;
                println!(
                    "initialized {} for trust domain {trust_domain}",
                    root.display()
                );
            }
            Self::Add { root, name } => {
                println!("{}", Root::new(root).add(&name).map_err(Failure::config)?);
            }
            Self::Rotate {
                root,
                name,
                drop_old,
            } => {
                println!(
                    "{}",
                    Root::new(root)
                        .rotate(&name, drop_old)
                        .map_err(Failure::config)?
                );
            }
            Self::Remove { root, name } => {
                println!(
                    "{}",
                    Root::new(root).remove(&name).map_err(Failure::config)?
                );
            }
            Self::Env { root, name } => {
                for (var, path) in Root::new(root).env(&name).map_err(Failure::config)? {
                    println!("export {var}={}", shell_quote(&path.to_string_lossy()));
                }
            }
        }
        Ok(())
    }
}

/// Quotes a value for POSIX shells when it needs it.
fn shell_quote(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}
