//! `ephemera secrets …`: secret URIs.

use std::path::PathBuf;

use clap::Subcommand;
use ephemera_core::SpiffeId;
use ephemera_core::secrets::SecretsConfig;
use ephemera_core::secrets::uri::SecretUri;

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
    /// Validate a secrets configuration; with --name and --as, print the
    /// resolution plan for that caller without reading any value.
    Check {
        /// The configuration (YAML).
        #[arg(long)]
        config: PathBuf,
        /// A secret name.
        #[arg(long, requires = "caller")]
        name: Option<String>,
        /// The caller's SPIFFE ID.
        #[arg(long = "as")]
        caller: Option<SpiffeId>,
    },
    /// Resolve a secret for a caller (operator diagnostics): refused without
    /// authorization like any caller.
    Get {
        /// The secret name.
        name: String,
        /// The caller's SPIFFE ID.
        #[arg(long = "as")]
        caller: SpiffeId,
        /// The configuration (YAML).
        #[arg(long)]
        config: PathBuf,
        /// Audit without a signing key: whoever can write the ledger can
        /// then rewrite it unnoticed.
        #[arg(long)]
        insecure_unkeyed_ledger: bool,
    },
}

/// Loads and validates a configuration; every problem on its own line.
pub fn load(path: &std::path::Path) -> Result<SecretsConfig, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::config(format!("{}: {e}", path.display())))?;
    let config: SecretsConfig = serde_yaml_ng::from_str(&text)
        .map_err(|e| Failure::config(format!("{}: {e}", path.display())))?;
    let problems = config.problems();
    if problems.is_empty() {
        Ok(config)
    } else {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| match line_of(&text, &p.at) {
                Some(line) => format!("{}:{line}: {p}", path.display()),
                None => format!("{}: {p}", path.display()),
            })
            .collect();
        Err(Failure {
            message: lines.join("\n"),
            code: super::EXIT_CONFIG,
        })
    }
}

/// The 1-based line of a problem's place (`refs.db`, `principals[2]`) in
/// block- or flow-style YAML, where it can be found.
fn line_of(text: &str, at: &str) -> Option<usize> {
    let (section, rest) = match at.split_once('.') {
        Some((section, rest)) => (section, Some(rest)),
        None => (at.split('[').next()?, None),
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&format!("{section}:")))?;
    let body = lines[start + 1..]
        .iter()
        .take_while(|l| l.is_empty() || l.starts_with([' ', '-', '#']))
        .enumerate();
    let found = match rest {
        Some(rest) => {
            let name = rest.split('.').next()?;
            if lines[start].contains(&format!("{name}:")) {
                return Some(start + 1);
            }
            let key = format!("{name}:");
            body.filter(|(_, l)| l.trim_start().starts_with(&key))
                .map(|(i, _)| i)
                .next()
        }
        None => {
            let index: usize = at.split_once('[')?.1.strip_suffix(']')?.parse().ok()?;
            body.filter(|(_, l)| l.trim_start().starts_with("- "))
                .map(|(i, _)| i)
                .nth(index)
        }
    };
    found.map(|i| start + 2 + i)
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
            Self::Check {
                config,
                name,
                caller,
            } => {
                let c = load(&config)?;
                match (name, caller) {
                    (Some(name), Some(caller)) => {
                        let plan = c.plan(&name, &caller).map_err(Failure::rejected)?;
                        let grant = plan.grant.as_ref().map_or_else(String::new, |g| {
                            format!(
                                ", grant {} s × {} use(s) for {}",
                                g.ttl_secs,
                                g.max_uses,
                                g.purposes.join("|")
                            )
                        });
                        println!(
                            "{name}: principal {}, store {}, {}{grant}",
                            plan.principal, plan.store, plan.reference
                        );
                    }
                    _ => println!(
                        "ok: {} stores, {} refs, {} policies, {} principal rules",
                        c.stores.len(),
                        c.refs.len(),
                        c.policies.len(),
                        c.principals.len()
                    ),
                }
            }
            Self::Get {
                name,
                caller,
                config,
                insecure_unkeyed_ledger,
            } => {
                let c = load(&config)?;
                let runtime = super::runtime()?;
                let (value, _) = runtime.block_on(async {
                    let audit = crate::secrets::Audit::open(&c, insecure_unkeyed_ledger)
                        .map_err(Failure::config)?;
                    let resolved =
                        crate::secrets::resolve_audited(&c, audit.as_ref(), &name, &caller)
                            .await
                            .map_err(Failure::rejected);
                    if let Some(audit) = &audit {
                        audit.flush().await;
                    }
                    resolved
                })?;
                println!("{}", value.expose());
            }
        }
        Ok(())
    }
}
