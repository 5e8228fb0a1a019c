//! Verifying a ledger's hash chain.

use serde_json::Value;

use super::record::{GENESIS_HASH, hash_of};
use super::signing::LedgerVerifier;

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
    /// Records covered by the last valid signature (checked with a key).
    pub signed: u64,
}

impl Default for ChainHead {
    fn default() -> Self {
        Self {
            records: 0,
            hash: GENESIS_HASH.to_owned(),
            signed: 0,
        }
    }
}

/// Checks one line against the head so far, advances it and returns the
/// record; with a `verifier`, a `sig` on the line must be the writer's.
pub fn check_line(
    head: &mut ChainHead,
    line_no: usize,
    line: &str,
    verifier: Option<&LedgerVerifier>,
) -> Result<Value, ChainError> {
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
    if let (Some(verifier), Some(sig)) = (verifier, field("sig")) {
        if !verifier.verify(&stated, &sig) {
            return Err(fail(
                "the signature is not the writer's (forged or re-signed records)".into(),
            ));
        }
        head.signed = head.records + 1;
    }
    head.records += 1;
    head.hash = stated;
    Ok(record)
}

/// Verifies every line of a ledger's text; with a `verifier`, every record
/// must be covered by a signature of the writer's (the last one signed).
pub fn verify_lines(
    text: &str,
    verifier: Option<&LedgerVerifier>,
) -> Result<ChainHead, ChainError> {
    let mut head = ChainHead::default();
    for (i, line) in text.lines().enumerate() {
        check_line(&mut head, i + 1, line, verifier)?;
    }
    if verifier.is_some() && head.signed < head.records {
        return Err(ChainError {
            line: usize::try_from(head.signed + 1).unwrap_or(usize::MAX),
            reason: "no signature covers this record or any after it (appended without the \
                     writer's key)"
                .into(),
        });
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::{Event, LedgerRecord, TransactionEvent};
    use crate::ledger::signing::LedgerKey;

    /// Transaction ids with the third record's edited.
    fn edit_third(seq: u64) -> String {
        if seq == 3 { "tx-X" } else { "tx-{}" }.into()
    }

    fn ledger(n: u64) -> Vec<String> {
        chain(n, |_| "tx-{}".into(), None, &[])
    }

    /// `n` records whose transaction ids `name` gives, those at `signed`
    /// signed with `key`.
    fn chain(
        n: u64,
        name: impl Fn(u64) -> String,
        key: Option<&LedgerKey>,
        signed: &[u64],
    ) -> Vec<String> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut r = LedgerRecord::seal(
                    seq,
                    1000 + seq,
                    &prev,
                    TransactionEvent::new(Event::Open, name(seq).replace("{}", &seq.to_string())),
                );
                if let Some(key) = key.filter(|_| signed.contains(&seq)) {
                    r.sig = Some(key.sign(&r.hash));
                }
                prev = r.hash.clone();
                serde_json::to_string(&r).unwrap()
            })
            .collect()
    }

    #[test]
    fn without_the_writers_key_no_record_is_added_altered_or_removed_unnoticed() {
        let key = LedgerKey::generate().unwrap();
        let verifier = key.verifier();
        let check = |lines: &[String]| verify_lines(&lines.join("\n"), Some(&verifier));
        let honest = chain(5, |_| "tx-{}".into(), Some(&key), &[2, 5]);
        assert_eq!(check(&honest).unwrap().records, 5);

        // Rewritten and re-chained (every hash recomputed), re-signed with
        // another key: the writer's signature no longer matches.
        let thief = LedgerKey::generate().unwrap();
        let rewritten = chain(5, edit_third, Some(&thief), &[2, 5]);
        assert_eq!(check(&rewritten).unwrap_err().line, 2);
        let unsigned = chain(5, edit_third, None, &[]);
        assert_eq!(check(&unsigned).unwrap_err().line, 1);
        // Honest up to 2, rewritten after: the signature at 5 fails.
        let mut spliced = honest.clone();
        spliced.splice(2.., chain(5, edit_third, None, &[]).into_iter().skip(2));
        assert!(check(&spliced).is_err());
        // Appended without the key.
        let mut appended = chain(6, |_| "tx-{}".into(), Some(&key), &[2, 5]);
        assert_eq!(check(&appended).unwrap_err().line, 6);
        appended.pop();
        assert!(check(&appended).is_ok());
        // Cut inside a signed batch: the tail is unsigned.
        assert_eq!(check(&honest[..4]).unwrap_err().line, 3);
        // Without a key only the chain is checked.
        assert!(verify_lines(&unsigned.join("\n"), None).is_ok());
    }

    #[test]
    fn an_intact_chain_verifies() {
        let head = verify_lines(&ledger(5).join("\n"), None).unwrap();
        assert_eq!(head.records, 5);
    }

    #[test]
    fn edits_deletions_and_reordering_are_detected_at_the_first_broken_record() {
        let lines = ledger(5);
        let edited = lines.join("\n").replacen("tx-3", "tx-X", 1);
        assert_eq!(verify_lines(&edited, None).unwrap_err().line, 3);
        let mut deleted = lines.clone();
        deleted.remove(1);
        assert_eq!(verify_lines(&deleted.join("\n"), None).unwrap_err().line, 2);
        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        assert_eq!(verify_lines(&swapped.join("\n"), None).unwrap_err().line, 3);
        let mut truncated_head = lines;
        truncated_head.remove(0);
        assert_eq!(
            verify_lines(&truncated_head.join("\n"), None)
                .unwrap_err()
                .line,
            1
        );
    }
}
