//! File ledgers gathered into one PostgreSQL table: one row per record,
//! keyed by `(writer, seq)`, each writer's records keeping their own hash
//! chain and their writer's signatures, so one writer's key cannot rewrite
//! another's trail. Shipping is idempotent (a record already in the table
//! is not written again, and one that differs stops the shipment), and the
//! shipping role needs `INSERT` and `SELECT` only.

use std::collections::BTreeMap;

use tokio_postgres::{Client, NoTls};

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
    /// PostgreSQL refused or could not be reached.
    #[error("postgres: {0}")]
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

/// Connects with a libpq-style URL (`postgres://user@host:port/db`) and,
/// when given, the password, giving up on an unanswered connect after
/// `timeout`.
pub async fn connect(
    url: &str,
    password: Option<&str>,
    timeout: std::time::Duration,
) -> Result<Client, PostgresError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| PostgresError::Url(e.to_string()))?;
    if let Some(password) = password {
        config.password(password);
    }
    config.connect_timeout(timeout);
    let (client, connection) = config.connect(NoTls).await?;
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
