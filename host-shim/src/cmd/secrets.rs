//! `ephemera secrets …`: secret URIs.

use clap::Subcommand;
use ephemera_core::secret_uri::SecretUri;

use super::Failure;

/// Secret commands.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Print a secret URI's canonical form, or exit non-zero with its error code.
    Uri {
        /// The URI, e.g. openbao+kv2://secret/app/db#password?version=3.
        uri: String,
        /// Mounts the tenant may use (comma-separated).
        #[arg(long, value_delimiter = ',')]
        allowed_mounts: Option<Vec<String>>,
    },
}

impl SecretsCommand {
    /// Runs the command.
    pub fn run(self) -> Result<(), Failure> {
        match self {
            Self::Uri {
                uri,
                allowed_mounts,
            } => {
                let parsed =
                    SecretUri::parse(&uri, allowed_mounts.as_deref()).map_err(|e| Failure {
                        message: e.to_string(),
                        code: super::EXIT_REJECTED,
                    })?;
                println!("{parsed}");
            }
        }
        Ok(())
    }
}
