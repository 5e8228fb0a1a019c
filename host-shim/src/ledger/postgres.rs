//! File ledgers gathered into one PostgreSQL table: one row per record,
//! keyed by `(writer, seq)`, each writer's records keeping their own hash
//! chain and their writer's signatures, so one writer's key cannot rewrite
//! another's trail. Shipping is idempotent (a record already in the table
//! is not written again, and one that differs stops the shipment), and the
//! shipping role needs `INSERT` and `SELECT` only.

use std::collections::BTreeMap;

use std::path::Path;
use std::sync::Arc;

use tokio_postgres::Client;

use super::chain::{ChainError, ChainHead, check_line, verify_lines};
use super::signing::LedgerVerifier;

/// Why a shipment or a verification could not be done.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The table name is not a plain SQL identifier.
    #[error("table {0:?}: use lower-case letters, digits and `_`")]
    Table(String),
    /// The connection string is not one.
    #[error("--postgres: {0}")]
    Url(String),
    /// TLS cannot be set up.
    #[error("postgres tls: {0}")]
    Tls(String),
    /// PostgreSQL refused or could not be reached.
    #[error("postgres: {}", describe(.0))]
    Database(#[from] tokio_postgres::Error),
    /// The file's chain is broken: nothing of it is shipped.
    #[error("the ledger file is broken at {0}; nothing shipped")]
    Broken(ChainError),
    /// The table holds another record at a position the file has.
    #[error("writer {writer:?}: the table's record {seq} differs from the file's; nothing shipped")]
    Diverged {
        /// The writer.
        writer: String,
        /// The position.
        seq: u64,
    },
}

/// A PostgreSQL error with its causes (the server's message, the TLS or
/// I/O error), which its own `Display` leaves out.
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A table name safe to put in SQL.
pub fn table_name(name: &str) -> Result<&str, PostgresError> {
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.len() <= 63;
    ok.then_some(name)
        .ok_or_else(|| PostgresError::Table(name.to_owned()))
}

/// The SQL that creates `table` and lets `role` ship into it: `INSERT` and
/// `SELECT`, nothing else.
pub fn schema(table: &str, role: &str) -> Result<String, PostgresError> {
    let table = table_name(table)?;
    let role = table_name(role)?;
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n  writer text NOT NULL,\n  seq bigint NOT NULL \
         CHECK (seq > 0),\n  hash text NOT NULL,\n  record text NOT NULL,\n  PRIMARY KEY (writer, \
         seq)\n);\nREVOKE ALL ON {table} FROM PUBLIC;\nGRANT INSERT, SELECT ON {table} TO {role};\n"
    ))
}

/// A connection's background half: drive it (spawn it) for the client to
/// work.
pub type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
        tokio_postgres::Socket,
    >>::Stream,
>;

/// Where and how to reach PostgreSQL.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// A libpq-style URL (`postgres://user@host:port/db?sslmode=require`).
    pub url: &'a str,
    /// The role's password, when it has one.
    pub password: Option<&'a str>,
    /// PEM CAs trusted instead of the platform's; TLS is then required.
    pub ca_file: Option<&'a Path>,
    /// Longest an unanswered connect may take.
    pub timeout: std::time::Duration,
}

/// TLS for PostgreSQL: rustls (ring), verifying the server against the
/// platform's trust store or only `ca_file`'s CAs.
fn tls(ca_file: Option<&Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PostgresError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PostgresError::Tls(e.to_string()))?;
    let config = match ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| PostgresError::Tls(format!("ca_file {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert
                    .map_err(|e| PostgresError::Tls(format!("ca_file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| PostgresError::Tls(format!("ca_file {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(PostgresError::Tls(format!(
                    "ca_file {}: no PEM certificate",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt as _;
            builder
                .with_platform_verifier()
                .map_err(|e| PostgresError::Tls(e.to_string()))?
                .with_no_client_auth()
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Connects to `target`: TLS when the server offers it (always verified),
/// required with a `ca_file` or `sslmode=require`.
pub async fn open(target: Target<'_>) -> Result<(Client, Connection), PostgresError> {
    let mut config: tokio_postgres::Config = target
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| PostgresError::Url(e.to_string()))?;
    if let Some(password) = target.password {
        config.password(password);
    }
    if target.ca_file.is_some() {
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    config.connect_timeout(target.timeout);
    let tls = tls(target.ca_file)?;
    Ok(config.connect(tls).await?)
}

/// As [`open`], with the connection driven in the background.
pub async fn connect(target: Target<'_>) -> Result<Client, PostgresError> {
    let (client, connection) = open(target).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("postgres connection closed: {e}");
        }
    });
    Ok(client)
}

/// What a shipment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    /// Records the table held for this writer before.
    pub before: u64,
    /// Records added now.
    pub added: u64,
}

/// Ships the records of a file ledger (`text`) that the table does not
/// hold yet, as `writer`, in one transaction.
pub async fn ship(
    client: &mut Client,
    table: &str,
    writer: &str,
    text: &str,
) -> Result<Shipped, PostgresError> {
    let table = table_name(table)?;
    verify_lines(text, None).map_err(PostgresError::Broken)?;
    let transaction = client.transaction().await?;
    let last = transaction
        .query_opt(
            &format!("SELECT seq, hash FROM {table} WHERE writer = $1 ORDER BY seq DESC LIMIT 1"),
            &[&writer],
        )
        .await?;
    let (before, shipped_hash) = match &last {
        Some(row) => (
            u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            row.get::<_, String>(1),
        ),
        None => (0, String::new()),
    };
    let mut head = ChainHead::default();
    let mut added = 0;
    let insert = transaction
        .prepare(&format!(
            "INSERT INTO {table} (writer, seq, hash, record) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (writer, seq) DO NOTHING"
        ))
        .await?;
    for (i, line) in text.lines().enumerate() {
        check_line(&mut head, i + 1, line, None).map_err(PostgresError::Broken)?;
        let seq = head.records;
        if seq < before {
            continue;
        }
        if seq == before {
            if head.hash != shipped_hash {
                return Err(PostgresError::Diverged {
                    writer: writer.to_owned(),
                    seq,
                });
            }
            continue;
        }
        let seq_sql = i64::try_from(seq).unwrap_or(i64::MAX);
        transaction
            .execute(&insert, &[&writer, &seq_sql, &head.hash, &line])
            .await?;
        added += 1;
    }
    if before > head.records {
        return Err(PostgresError::Diverged {
            writer: writer.to_owned(),
            seq: head.records + 1,
        });
    }
    transaction.commit().await?;
    Ok(Shipped { before, added })
}

/// One writer's chain in the table, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterChain {
    /// The writer.
    pub writer: String,
    /// Its records and head.
    pub head: ChainHead,
    /// True when its signatures were checked with its key.
    pub signed: bool,
}

/// Why a table's chains do not verify: the first bad row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("writer {writer:?}, seq {seq}: {reason}")]
pub struct BadRow {
    /// The writer.
    pub writer: String,
    /// The row's position in that writer's chain.
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

/// Verifies every writer's chain in `table`: positions from 1 without a
/// gap, each record's hash and link, the `hash` column, and, for writers
/// in `keys`, that a signature covers every record.
pub async fn verify(
    client: &Client,
    table: &str,
    keys: &BTreeMap<String, LedgerVerifier>,
) -> Result<Result<Vec<WriterChain>, BadRow>, PostgresError> {
    let table = table_name(table)?;
    let rows = client
        .query(
            &format!("SELECT writer, seq, hash, record FROM {table} ORDER BY writer, seq"),
            &[],
        )
        .await?;
    let mut chains: BTreeMap<String, Vec<(i64, String, String)>> = BTreeMap::new();
    for row in rows {
        chains
            .entry(row.get(0))
            .or_default()
            .push((row.get(1), row.get(2), row.get(3)));
    }
    let mut out = Vec::new();
    for (writer, rows) in chains {
        let bad = |seq: u64, reason: String| BadRow {
            writer: writer.clone(),
            seq,
            reason,
        };
        let verifier = keys.get(&writer);
        let mut head = ChainHead::default();
        for (i, (seq, hash, record)) in rows.iter().enumerate() {
            let expected = i as u64 + 1;
            if u64::try_from(*seq).ok() != Some(expected) {
                return Ok(Err(bad(
                    expected,
                    format!("missing (the next row is seq {seq})"),
                )));
            }
            if let Err(e) = check_line(&mut head, i + 1, record, verifier) {
                return Ok(Err(bad(expected, e.reason)));
            }
            if *hash != head.hash {
                return Ok(Err(bad(
                    expected,
                    "the hash column does not match the record".into(),
                )));
            }
        }
        if verifier.is_some() && head.signed < head.records {
            return Ok(Err(bad(
                head.signed + 1,
                "no signature covers this record or any after it".into(),
            )));
        }
        out.push(WriterChain {
            signed: verifier.is_some(),
            writer,
            head,
        });
    }
    if let Some(missing) = keys.keys().find(|w| !out.iter().any(|c| &c.writer == *w)) {
        return Ok(Err(BadRow {
            writer: missing.clone(),
            seq: 1,
            reason: "a key was given for this writer, but the table holds none of its records"
                .into(),
        }));
    }
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_name_tables() {
        assert!(table_name("ephemera_ledger").is_ok());
        for bad in ["", "Ledger", "a;drop", "a b", "1a", "a-b"] {
            assert!(table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_schema_grants_insert_and_select_only() {
        let sql = schema("ephemera_ledger", "ledger_shipper").unwrap();
        assert!(sql.contains("GRANT INSERT, SELECT ON ephemera_ledger TO ledger_shipper;"));
        assert!(sql.contains("PRIMARY KEY (writer, seq)"));
        assert!(schema("t", "x; DROP TABLE t").is_err());
    }
}
