//! `ephemera identity …`: provisioning in the spiffile layout.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Failure;
use crate::identity::provision::Root;
use crate::identity::store::{BundleStore, publish, schema};

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
        /// The bundle store changes are published to.
        #[command(flatten)]
        store: PublishArgs,
        /// Also issue the service a WIT.
        #[command(flatten)]
        wit: WitArgs,
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
        /// The bundle store changes are published to.
        #[command(flatten)]
        store: PublishArgs,
        /// Also give the service a new WIT proof key and WIT.
        #[command(flatten)]
        wit: WitArgs,
    },
    /// Make a key (outside the root; created when absent) a WIT issuer of
    /// the root's trust domain, listed in `wit-issuers.json`.
    WitIssuer {
        /// The provisioning root directory.
        root: PathBuf,
        /// The issuer's private key file (PKCS#8 PEM, 0600).
        #[arg(long)]
        key: PathBuf,
    },
    /// Issue a service a Workload Identity Token (`wit.jwt`), bound to its
    /// proof key (`wit-key.pem`, made when absent).
    Wit {
        /// The provisioning root directory.
        root: PathBuf,
        /// The service name.
        name: String,
        /// The WIT issuer's private key file.
        #[arg(long)]
        issuer_key: PathBuf,
        /// The WIT's lifetime, seconds.
        #[arg(long, default_value_t = DEFAULT_WIT_TTL_SECS)]
        ttl_secs: u64,
        /// Make a new proof key: WITs bound to the old one stop verifying.
        #[arg(long)]
        new_proof_key: bool,
    },
    /// Revoke a service: remove it from the bundle and delete its files.
    Remove {
        /// The provisioning root directory.
        root: PathBuf,
        /// The service name.
        name: String,
        /// The bundle store changes are published to.
        #[command(flatten)]
        store: PublishArgs,
    },
    /// Publish the root's whole bundle as the bundle store's next revision.
    Publish {
        /// The provisioning root directory.
        root: PathBuf,
        /// The bundle store changes are published to.
        #[command(flatten)]
        store: PublishArgs,
    },
    /// Print the SQL that creates the bundle store's table.
    Schema {
        /// The role shims read the table as.
        #[arg(long, default_value = "ephemera_shim")]
        reader: String,
        /// The role `identity … --postgres` publishes as.
        #[arg(long, default_value = "ephemera_publisher")]
        publisher: String,
    },
    /// Print the environment variables pointing a workload at its material.
    Env {
        /// The provisioning root directory.
        root: PathBuf,
        /// The service name.
        name: String,
    },
}

/// A WIT's default lifetime: hours, as the WIMSE draft advises.
const DEFAULT_WIT_TTL_SECS: u64 = 4 * 3600;

/// Issuing a WIT along with `add` or `rotate`.
#[derive(Debug, Clone, Args)]
pub struct WitArgs {
    /// Issue the service a WIT signed by this issuer key file.
    #[arg(long)]
    wit_issuer_key: Option<PathBuf>,
    /// The WIT's lifetime, seconds.
    #[arg(long, default_value_t = DEFAULT_WIT_TTL_SECS)]
    wit_ttl_secs: u64,
}

impl WitArgs {
    fn issue(&self, root: &Root, name: &str, new_proof_key: bool) -> Result<(), Failure> {
        if let Some(key) = &self.wit_issuer_key {
            root.issue_wit(name, key, self.wit_ttl_secs, new_proof_key)
                .map_err(Failure::config)?;
        }
        Ok(())
    }
}

/// Where bundle changes are published (the shims' `--bundle-postgres`).
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Publish the bundle change to this PostgreSQL database's bundle store
    /// (`postgres://user@host:port/db`) before any key is written.
    #[arg(long)]
    postgres: Option<String>,
    /// A file holding the publishing role's password.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// PEM CAs trusted for the bundle store instead of the platform's (TLS
    /// required).
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

impl PublishArgs {
    /// `root`, publishing through the store when one is given.
    fn root(&self, root: PathBuf) -> Result<Root, Failure> {
        let root = Root::new(root);
        let Some(url) = &self.postgres else {
            return Ok(root);
        };
        let store = BundleStore {
            url: url.clone(),
            password_file: self.password_file.clone(),
            ca_file: self.ca_file.clone(),
        };
        let runtime = super::runtime()?;
        Ok(root.publishing(Box::new(move |doc, change| {
            let revision = runtime
                .block_on(publish(&store, doc, change))
                .map_err(|e| e.to_string())?;
            eprintln!("bundle store: revision {revision} published");
            Ok(())
        })))
    }
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
            Self::Add {
                root,
                name,
                store,
                wit,
            } => {
                let root = store.root(root)?;
                let id = root.add(&name).map_err(Failure::config)?;
                wit.issue(&root, &name, false)?;
                println!("{id}");
            }
            Self::Rotate {
                root,
                name,
                drop_old,
                store,
                wit,
            } => {
                let root = store.root(root)?;
                let id = root.rotate(&name, drop_old).map_err(Failure::config)?;
                wit.issue(&root, &name, true)?;
                println!("{id}");
            }
            Self::WitIssuer { root, key } => {
                let kid = Root::new(root).wit_issuer(&key).map_err(Failure::config)?;
                println!("WIT issuer {kid}");
            }
            Self::Wit {
                root,
                name,
                issuer_key,
                ttl_secs,
                new_proof_key,
            } => {
                let id = Root::new(root)
                    .issue_wit(&name, &issuer_key, ttl_secs, new_proof_key)
                    .map_err(Failure::config)?;
                println!("{id}");
            }
            Self::Remove { root, name, store } => {
                println!(
                    "{}",
                    store.root(root)?.remove(&name).map_err(Failure::config)?
                );
            }
            Self::Publish { root, store } => {
                if store.postgres.is_none() {
                    return Err(Failure::config("identity publish needs --postgres"));
                }
                store.root(root)?.publish_all().map_err(Failure::config)?;
            }
            Self::Schema { reader, publisher } => {
                print!("{}", schema(&reader, &publisher).map_err(Failure::config)?);
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
