//! The IPT configuration file (YAML): ledger, brokers and policy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::policy::Rule;
use crate::brokers::BrokerConfig;

/// Where and how the ledger is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// The ledger file (JSON lines).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Or a PostgreSQL table shared with other shims.
    #[serde(default)]
    pub postgres: Option<crate::ledger::postgres_writer::PostgresLedgerConfig>,
    /// A file holding the key (at least 16 bytes) for HMAC references: with
    /// it, records carry `refs.caller_token`, an HMAC of the caller's token,
    /// to correlate a token with its transactions without storing it.
    #[serde(default)]
    pub hmac_key_file: Option<PathBuf>,
    /// The writer's Ed25519 private key (PKCS#8 PEM, 0600, outside the
    /// ledger's directory): every durable batch is signed with it.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Where signed checkpoints of the ledger's head are kept.
    #[serde(default)]
    pub checkpoint: Option<ephemera_core::secrets::CheckpointConfig>,
}

/// The whole IPT configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IptConfig {
    /// The audit ledger.
    pub ledger: LedgerConfig,
    /// Brokers by name.
    pub brokers: BTreeMap<String, BrokerConfig>,
    /// Who may do what, through which broker.
    pub policy: Vec<Rule>,
    /// How often expired transactions are reaped, milliseconds.
    #[serde(default = "default_reap")]
    pub reap_interval_ms: u64,
    /// Most transactions one caller may have open at once (more: 429).
    #[serde(default = "default_max_open")]
    pub max_open_per_caller: usize,
}

fn default_reap() -> u64 {
    1000
}

fn default_max_open() -> usize {
    64
}

/// Why an IPT configuration file is refused; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum IptConfigError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a valid configuration.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: serde_yaml_ng::Error,
    },
    /// The ledger is not one file or one table.
    #[error("{}: ledger: {problem}", path.display())]
    Ledger {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: &'static str,
    },
    /// Policy rules name brokers the file does not define.
    #[error("{}: {}", path.display(), problems.join("; "))]
    UnknownBrokers {
        /// The file.
        path: PathBuf,
        /// One line per rule, e.g. `policy[2] names unknown broker "x"`.
        problems: Vec<String>,
    },
}

impl IptConfig {
    /// Reads and validates a file; every problem is reported at once.
    pub fn load(path: &Path) -> Result<Self, IptConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| IptConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates the text of the file at `path` (which errors
    /// name); every problem is reported at once.
    pub fn parse(text: &str, path: &Path) -> Result<Self, IptConfigError> {
        let config: Self =
            serde_yaml_ng::from_str(text).map_err(|source| IptConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let ledger = |problem| IptConfigError::Ledger {
            path: path.to_path_buf(),
            problem,
        };
        match (&config.ledger.path, &config.ledger.postgres) {
            (Some(_), Some(_)) => return Err(ledger("give path or postgres, not both")),
            (None, None) => return Err(ledger("give path (a file) or postgres (a table)")),
            (None, Some(_)) if config.ledger.checkpoint.is_some() => {
                return Err(ledger("checkpoint applies to a file ledger, not postgres"));
            }
            _ => {}
        }
        let problems: Vec<String> = config
            .policy
            .iter()
            .enumerate()
            .filter(|(_, r)| !config.brokers.contains_key(&r.broker))
            .map(|(i, r)| format!("policy[{i}] names unknown broker {:?}", r.broker))
            .collect();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(IptConfigError::UnknownBrokers {
                path: path.to_path_buf(),
                problems,
            })
        }
    }
}
