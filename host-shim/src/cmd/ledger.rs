//! `ephemera ledger …`: create the writer's key, check and read the audit ledger.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::Value;

use super::Failure;
use crate::ledger::chain::verify_lines;
use crate::ledger::{Checkpoint, LedgerKey, LedgerVerifier};

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
    /// signature covers every record; report the first bad line.
    Verify {
        /// The ledger file.
        file: PathBuf,
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
                file,
                public_key,
                checkpoint,
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
