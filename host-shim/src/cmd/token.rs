//! `ephemera token …`: mint and verify JWT-SVIDs.

use std::io::Read as _;

use clap::Subcommand;
use ephemera_core::token::{DEFAULT_LEEWAY_SECS, DEFAULT_TTL_SECS, random_jti};
use ephemera_core::{BundleFormat, Minter, RustCrypto, SpiffeId, TokenVerifier, VerifyOptions};
use serde_json::json;

use super::Failure;
use crate::clock::unix_now;
use crate::identity::files::{IdentityPaths, read_bundle, read_id, read_key};

/// Token commands. Identity comes from the spiffile environment variables.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a JWT-SVID for one audience and print it.
    Mint {
        /// The receiver's SPIFFE ID.
        #[arg(long)]
        audience: SpiffeId,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = DEFAULT_TTL_SECS)]
        ttl: u64,
        /// Add a random `jti` claim.
        #[arg(long)]
        jti: bool,
    },
    /// Verify a JWT-SVID; prints {"caller", "claims"} or exits non-zero.
    Verify {
        /// The audience the token must name (default: this workload's ID).
        #[arg(long)]
        audience: Option<SpiffeId>,
        /// Clock leeway in seconds.
        #[arg(long, default_value_t = DEFAULT_LEEWAY_SECS)]
        leeway: u64,
        /// Read the bundle as a standard SPIFFE JWKS whose keys may sign for
        /// any ID of this workload's trust domain (central issuer).
        #[arg(long)]
        central_issuer: bool,
        /// The token, or `-` to read it from stdin.
        token: String,
    },
}

impl TokenCommand {
    /// Runs the command.
    pub fn run(self) -> Result<(), Failure> {
        let paths = IdentityPaths::from_env().map_err(Failure::config)?;
        match self {
            Self::Mint { audience, ttl, jti } => {
                let id = read_id(&paths.id).map_err(Failure::config)?;
                let key = read_key(&paths.key).map_err(Failure::config)?;
                let jti = jti.then(random_jti).transpose().map_err(Failure::config)?;
                let token = Minter::new(id, key)
                    .mint(&audience, unix_now(), ttl, jti.as_deref(), &RustCrypto)
                    .map_err(Failure::config)?;
                println!("{token}");
            }
            Self::Verify {
                audience,
                leeway,
                central_issuer,
                token,
            } => {
                let id = read_id(&paths.id).map_err(Failure::config)?;
                let format = if central_issuer {
                    BundleFormat::CentralIssuer {
                        trust_domain: id.trust_domain().to_owned(),
                    }
                } else {
                    BundleFormat::Spiffile
                };
                let bundle = read_bundle(&paths.bundle, &format).map_err(Failure::config)?;
                for warning in bundle.warnings() {
                    eprintln!("warning: {warning}");
                }
                let token = if token == "-" {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .map_err(Failure::config)?;
                    text.trim().to_owned()
                } else {
                    token
                };
                let options = VerifyOptions {
                    leeway_secs: leeway,
                    ..VerifyOptions::default()
                };
                let verifier = TokenVerifier::new(audience.unwrap_or(id), options);
                let verified = verifier
                    .verify(&token, &bundle, unix_now(), &RustCrypto)
                    .map_err(Failure::rejected)?;
                println!(
                    "{}",
                    json!({"caller": verified.caller, "claims": verified.claims})
                );
            }
        }
        Ok(())
    }
}
