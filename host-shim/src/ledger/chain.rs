//! Verifying a ledger's hash chain.

use serde_json::Value;

use super::record::{GENESIS_HASH, hash_of};

/// The first broken place of a ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ChainError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

/// A verified ledger's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Number of records.
    pub records: u64,
    /// Hash of the last record (the genesis hash when empty).
    pub hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        Self {
            records: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

/// Checks one line against the head so far and advances it.
pub fn check_line(head: &mut ChainHead, line_no: usize, line: &str) -> Result<(), ChainError> {
    let fail = |reason: String| ChainError {
        line: line_no,
        reason,
    };
    let record: Value =
        serde_json::from_str(line).map_err(|e| fail(format!("not a JSON record: {e}")))?;
    let field = |name: &str| record.get(name).and_then(Value::as_str).map(str::to_owned);
    let seq = record.get("seq").and_then(Value::as_u64);
    if seq != Some(head.records + 1) {
        return Err(fail(format!(
            "seq is {seq:?}, expected {}",
            head.records + 1
        )));
    }
    if field("prev_hash").as_deref() != Some(head.hash.as_str()) {
        return Err(fail(
            "prev_hash does not match the previous record (deleted, reordered or edited records)"
                .into(),
        ));
    }
    let stated = field("hash").ok_or_else(|| fail("no hash".into()))?;
    if stated != hash_of(&record) {
        return Err(fail(
            "hash does not match the record's content (edited record)".into(),
        ));
    }
    head.records += 1;
    head.hash = stated;
    Ok(())
}

/// Verifies every line of a ledger's text.
pub fn verify_lines(text: &str) -> Result<ChainHead, ChainError> {
    let mut head = ChainHead::default();
    for (i, line) in text.lines().enumerate() {
        check_line(&mut head, i + 1, line)?;
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::{Event, LedgerRecord, TransactionEvent};

    fn ledger(n: u64) -> Vec<String> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let r = LedgerRecord::seal(
                    seq,
                    1000 + seq,
                    &prev,
                    TransactionEvent::new(Event::Open, format!("tx-{seq}")),
                );
                prev = r.hash.clone();
                serde_json::to_string(&r).unwrap()
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let head = verify_lines(&ledger(5).join("\n")).unwrap();
        assert_eq!(head.records, 5);
    }

    #[test]
    fn edits_deletions_and_reordering_are_detected_at_the_first_broken_record() {
        let lines = ledger(5);
        let edited = lines.join("\n").replacen("tx-3", "tx-X", 1);
        assert_eq!(verify_lines(&edited).unwrap_err().line, 3);
        let mut deleted = lines.clone();
        deleted.remove(1);
        assert_eq!(verify_lines(&deleted.join("\n")).unwrap_err().line, 2);
        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        assert_eq!(verify_lines(&swapped.join("\n")).unwrap_err().line, 3);
        let mut truncated_head = lines;
        truncated_head.remove(0);
        assert_eq!(
            verify_lines(&truncated_head.join("\n")).unwrap_err().line,
            1
        );
    }
}
