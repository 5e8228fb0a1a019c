//! `ephemera ledger …`: create the writer's key, check and read the audit ledger.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::Value;

use super::Failure;
use std::collections::BTreeMap;

use crate::ledger::chain::verify_lines;
use crate::ledger::postgres;
use crate::ledger::{Checkpoint, LedgerKey, LedgerVerifier};

/// Longest `ship` and `verify` wait for PostgreSQL to accept a connection.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Ledger commands.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Create a ledger signing key: the private key (0600, never
    /// overwritten) for the shim, the public key for `verify`.
    Keygen {
        /// Where the private key goes (outside the ledger's directory).
        private: PathBuf,
        /// Where the public key goes.
        public: PathBuf,
    },
    /// Copy a signing key delivered group-readable (a Kubernetes Secret) to a
    /// 0600 file of this user, as the shim requires (a pod's init step).
    InstallKey {
        /// The delivered key.
        #[arg(long)]
        from: PathBuf,
        /// Where the shim reads it.
        #[arg(long)]
        to: PathBuf,
    },
    /// Check the whole hash chain and, with the writer's public key, that a
    /// signature covers every record; report the first bad line (or, with
    /// --postgres, every writer's chain in the table and the first bad row).
    Verify {
        /// The ledger file.
        #[arg(required_unless_present = "postgres", conflicts_with = "postgres")]
        file: Option<PathBuf>,
        /// A PostgreSQL table of shipped ledgers instead of a file:
        /// `postgres://user@host:port/db`.
        #[arg(long)]
        postgres: Option<String>,
        /// With --postgres: the table.
        #[arg(long, default_value = "ephemera_ledger", requires = "postgres")]
        table: String,
        /// With --postgres: a writer's public key, `WRITER=FILE`, repeated.
        #[arg(long = "writer-key", requires = "postgres")]
        writer_keys: Vec<String>,
        /// With --postgres: a file holding the password.
        #[arg(long, requires = "postgres")]
        password_file: Option<PathBuf>,
        /// With --postgres: PEM CAs trusted instead of the platform's (TLS
        /// required).
        #[arg(long, requires = "postgres")]
        ca_file: Option<PathBuf>,
        /// The writer's public key (`ledger keygen`); without it only the
        /// chain is checked, which a rewrite of the whole file passes.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// The newest checkpoint (as stored, or as `bao kv get -format=json`
        /// prints it): the ledger must still hold the record it signed,
        /// which a ledger cut back at a batch boundary does not. Needs
        /// --public-key.
        #[arg(long, requires = "public_key")]
        checkpoint: Option<PathBuf>,
    },
    /// Copy the records of a file ledger that a PostgreSQL table does not
    /// hold yet into it, as one writer, in one transaction: run it again
    /// (after a restart, on a timer) and nothing is lost or doubled.
    Ship {
        /// The ledger file.
        file: PathBuf,
        /// `postgres://user@host:port/db`.
        #[arg(long)]
        postgres: String,
        /// The writer's name in the table (one per ledger file, e.g. the pod).
        #[arg(long)]
        writer: String,
        /// The table.
        #[arg(long, default_value = "ephemera_ledger")]
        table: String,
        /// A file holding the password.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// PEM CAs trusted instead of the platform's (TLS required).
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Print the SQL that creates the table and lets a role ship into it
    /// (`INSERT` and `SELECT` only).
    Schema {
        /// The table.
        #[arg(long, default_value = "ephemera_ledger")]
        table: String,
        /// The role that ships.
        #[arg(long, default_value = "ephemera_ledger_writer")]
        role: String,
    },
    /// Print the last events, one per line.
    Tail {
        /// The ledger file.
        file: PathBuf,
        /// How many events.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
}

impl LedgerCommand {
    /// Runs the command.
    pub fn run(self) -> Result<(), Failure> {
        match self {
            Self::Keygen { private, public } => {
                let key = LedgerKey::generate().map_err(Failure::config)?;
                key.write(&private, &public).map_err(Failure::config)?;
                println!(
                    "ledger key: {} (private, 0600), {} (public)",
                    private.display(),
                    public.display()
                );
            }
            Self::InstallKey { from, to } => {
                LedgerKey::install(&from, &to).map_err(Failure::config)?;
            }
            Self::Verify {
                postgres: Some(url),
                table,
                writer_keys,
                password_file,
                ca_file,
                ..
            } => verify_table(
                &url,
                &table,
                &writer_keys,
                password_file.as_deref(),
                ca_file.as_deref(),
            )?,
            Self::Ship {
                file,
                postgres,
                writer,
                table,
                password_file,
                ca_file,
            } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| Failure::config(format!("{}: {e}", file.display())))?;
                let password = read_password(password_file.as_deref())?;
                let shipped = runtime()?
                    .block_on(async {
                        let mut client = postgres::connect(postgres::Target {
                            url: &postgres,
                            password: password.as_deref(),
                            ca_file: ca_file.as_deref(),
                            timeout: CONNECT_TIMEOUT,
                        })
                        .await?;
                        postgres::ship(&mut client, &table, &writer, &text).await
                    })
                    .map_err(|e| Failure::rejected(e.to_string()))?;
                println!(
                    "shipped: {} new records of writer {writer:?} ({} were there)",
                    shipped.added, shipped.before
                );
            }
            Self::Schema { table, role } => {
                print!(
                    "{}",
                    postgres::schema(&table, &role).map_err(Failure::config)?
                );
            }
            Self::Verify {
                file: Some(file),
                public_key,
                checkpoint,
                ..
            } => {
                let verifier = public_key
                    .as_deref()
                    .map(LedgerVerifier::load)
                    .transpose()
                    .map_err(Failure::config)?;
                let ledger_text = std::fs::read_to_string(&file)
                    .map_err(|e| Failure::config(format!("{}: {e}", file.display())))?;
                let head = verify_lines(&ledger_text, verifier.as_ref())
                    .map_err(|e| Failure::rejected(format!("{}: broken at {e}", file.display())))?;
                let checkpoint = match (checkpoint, &verifier) {
                    (Some(path), Some(verifier)) => {
                        let text = std::fs::read_to_string(&path)
                            .map_err(|e| Failure::config(format!("{}: {e}", path.display())))?;
                        let checkpoint = Checkpoint::parse(&text)
                            .map_err(|e| Failure::config(format!("{}: {e}", path.display())))?;
                        checkpoint
                            .check(verifier, &ledger_text)
                            .map_err(|e| Failure::rejected(format!("{}: {e}", file.display())))?;
                        Some(checkpoint.seq)
                    }
                    _ => None,
                };
                let checked = if let Some(seq) = checkpoint {
                    format!("signed by the writer's key; holds the checkpoint at seq {seq}")
                } else if verifier.is_some() {
                    "signed by the writer's key".to_owned()
                } else {
                    "chain only: give --public-key to check the signatures".to_owned()
                };
                println!(
                    "ok: {} records, chain head {} ({checked})",
                    head.records, head.hash
                );
            }
            Self::Verify { .. } => {
                return Err(Failure::config("give a ledger file or --postgres"));
            }
            Self::Tail { file, lines } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| Failure::config(format!("{}: {e}", file.display())))?;
                let all: Vec<&str> = text.lines().collect();
                for line in &all[all.len().saturating_sub(lines)..] {
                    println!("{}", human(line));
                }
            }
        }
        Ok(())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::config(format!("runtime: {e}")))
}

fn read_password(path: Option<&std::path::Path>) -> Result<Option<String>, Failure> {
    path.map(|path| {
        std::fs::read_to_string(path)
            .map(|p| p.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| Failure::config(format!("{}: {e}", path.display())))
    })
    .transpose()
}

/// `ledger verify --postgres`: every writer's chain, or the first bad row.
fn verify_table(
    url: &str,
    table: &str,
    writer_keys: &[String],
    password_file: Option<&std::path::Path>,
    ca_file: Option<&std::path::Path>,
) -> Result<(), Failure> {
    let mut keys = BTreeMap::new();
    for pair in writer_keys {
        let (writer, path) = pair
            .split_once('=')
            .ok_or_else(|| Failure::config(format!("--writer-key {pair:?}: give WRITER=FILE")))?;
        let verifier = LedgerVerifier::load(std::path::Path::new(path)).map_err(Failure::config)?;
        keys.insert(writer.to_owned(), verifier);
    }
    let password = read_password(password_file)?;
    let verdict = runtime()?
        .block_on(async {
            let client = postgres::connect(postgres::Target {
                url,
                password: password.as_deref(),
                ca_file,
                timeout: CONNECT_TIMEOUT,
            })
            .await?;
            postgres::verify(&client, table, &keys).await
        })
        .map_err(|e| Failure::config(e.to_string()))?;
    let chains = verdict.map_err(|bad| Failure::rejected(format!("{table}: broken at {bad}")))?;
    for chain in &chains {
        println!(
            "ok: writer {:?}: {} records, chain head {} ({})",
            chain.writer,
            chain.head.records,
            chain.head.hash,
            if chain.signed {
                "signed by the writer's key"
            } else {
                "chain only: give --writer-key to check the signatures"
            }
        );
    }
    if chains.is_empty() {
        println!("ok: {table} holds no records");
    }
    Ok(())
}

/// One record as a readable line.
fn human(line: &str) -> String {
    let Ok(record) = serde_json::from_str::<Value>(line) else {
        return format!(
            "(unreadable record) {}",
            line.chars().take(80).collect::<String>()
        );
    };
    let s = |name: &str| {
        record
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned()
    };
    let at = record
        .get("at_ms")
        .and_then(Value::as_u64)
        .map_or("-".into(), utc);
    let mut out = format!(
        "{at}  #{:<6} {:<7} tx={} caller={} {} {}",
        record.get("seq").and_then(Value::as_u64).unwrap_or(0),
        s("event"),
        s("transaction_id"),
        s("caller"),
        s("action"),
        s("resource"),
    );
    for (name, label) in [
        ("duration_ms", "took"),
        ("blast_radius", "blast"),
        ("revocation", "revocation"),
        ("error", "error"),
    ] {
        match record.get(name) {
            Some(Value::String(v)) => out.push_str(&format!("  {label}={v}")),
            Some(Value::Number(n)) => out.push_str(&format!("  {label}={n}ms")),
            _ => {}
        }
    }
    out
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn timestamps_are_rendered_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_795_434_388_123), "2026-11-23T11:46:28.123Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
