//! `ephemera ledger verify` and `ephemera ledger tail` on a real ledger file.

mod common;

use common::ephemera;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use ephemera_shim::ledger::{Entry, Event, FileLedger, LedgerKey, LedgerRecord, TransactionEvent};

/// A ledger of `n` records written by a shim holding the key `ledger
/// keygen` made: (dir, ledger, public key).
fn ledger_with(n: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (private, public) = (keys.join("ledger.key"), keys.join("ledger.pub"));
    let (code, _, err) = ephemera(&[
        "ledger",
        "keygen",
        &private.to_string_lossy(),
        &public.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{err}");
    let path = dir.path().join("ledger.jsonl");
    let key = LedgerKey::load(&private, Some(&path)).unwrap();
    let (ledger, _) = FileLedger::open(&path, Some(key)).unwrap();
    for i in 0..n {
        let mut e = TransactionEvent::new(
            if i % 2 == 0 {
                Event::Open
            } else {
                Event::Close
            },
            format!("tx-{}", i / 2),
        );
        e.caller = Some("spiffe://example.org/orders".into());
        e.resource = Some("secret/data/orders/a".into());
        e.action = Some("read".into());
        if i % 2 == 1 {
            e.duration_ms = Some(12);
        }
        ledger.append_blocking(e).unwrap();
    }
    (dir, path, public)
}

/// Re-chains `records` from `from` (0-based) on, as someone who can write
/// the file but lacks the key would: every hash recomputed, no signature.
fn rechain(records: &mut [LedgerRecord], from: usize) {
    for i in from..records.len() {
        let prev = if i == 0 {
            ephemera_shim::ledger::record::GENESIS_HASH.to_owned()
        } else {
            records[i - 1].hash.clone()
        };
        let r = &records[i];
        records[i] = LedgerRecord::seal(r.seq, r.at_ms, &prev, r.entry.clone());
    }
}

fn read(path: &Path) -> Vec<LedgerRecord> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write(path: &Path, records: &[LedgerRecord]) {
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn keygen_writes_an_owner_only_key_and_never_overwrites_one() {
    let (dir, _, public) = ledger_with(0);
    let private = dir.path().join("keys/ledger.key");
    assert_eq!(std::fs::metadata(&private).unwrap().mode() & 0o777, 0o600);
    let before = std::fs::read(&private).unwrap();
    let (code, _, err) = ephemera(&[
        "ledger",
        "keygen",
        &private.to_string_lossy(),
        &public.to_string_lossy(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(std::fs::read(&private).unwrap(), before);
}

#[test]
fn without_the_writers_key_no_record_is_altered_removed_or_added_unnoticed() {
    let (_dir, path, public) = ledger_with(6);
    let p = path.to_string_lossy().into_owned();
    let key = public.to_string_lossy().into_owned();
    let verify = || ephemera(&["ledger", "verify", &p, "--public-key", &key]);
    let (code, out, _) = verify();
    assert_eq!(code, 0);
    assert!(
        out.starts_with("ok: 6 records") && out.contains("signed"),
        "{out}"
    );
    let honest = read(&path);

    // A caller changed and the chain recomputed: the chain alone says ok,
    // the signatures do not.
    let mut altered = honest.clone();
    let Entry::Transaction(event) = &mut altered[2].entry else {
        panic!("a transaction's record");
    };
    event.caller = Some("spiffe://example.org/someone-else".into());
    rechain(&mut altered, 2);
    write(&path, &altered);
    let (code, out, _) = ephemera(&["ledger", "verify", &p]);
    assert_eq!(code, 0, "a rewritten chain is still a chain: {out}");
    let (code, _, err) = verify();
    assert_eq!(code, 1);
    assert!(err.contains("line 3"), "{err}");

    // A record removed from the middle and the rest re-chained.
    let mut removed = honest.clone();
    removed.remove(1);
    for (i, r) in removed.iter_mut().enumerate() {
        r.seq = i as u64 + 1;
    }
    rechain(&mut removed, 1);
    write(&path, &removed);
    let (code, _, err) = verify();
    assert_eq!(code, 1);
    assert!(err.contains("line 2"), "{err}");

    // Reordered.
    let mut swapped = honest.clone();
    swapped.swap(3, 4);
    write(&path, &swapped);
    let (code, _, err) = verify();
    assert_eq!(code, 1);
    assert!(err.contains("line 4"), "{err}");

    // A forged record appended.
    let mut appended = honest.clone();
    let last = appended.last().unwrap().clone();
    appended.push(LedgerRecord::seal(
        7,
        last.at_ms,
        &last.hash,
        TransactionEvent::new(Event::Close, "tx-forged"),
    ));
    write(&path, &appended);
    let (code, _, err) = verify();
    assert_eq!(code, 1);
    assert!(err.contains("line 7"), "{err}");

    // Another key's signatures are not the writer's.
    let thief = LedgerKey::generate().unwrap();
    let mut resigned = altered.clone();
    for r in &mut resigned {
        r.sig = Some(thief.sign(&r.hash));
    }
    write(&path, &resigned);
    let (code, _, err) = verify();
    assert_eq!(code, 1);
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn verify_accepts_an_intact_ledger_and_names_the_first_broken_record() {
    let (_dir, path, _) = ledger_with(6);
    let p = path.to_string_lossy();
    let (code, out, _) = ephemera(&["ledger", "verify", &p]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ok: 6 records"), "{out}");

    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(3);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (code, _, err) = ephemera(&["ledger", "verify", &p]);
    assert_eq!(code, 1);
    assert!(err.contains("broken at line 4"), "{err}");
}

#[test]
fn tail_prints_events_readably() {
    let (_dir, path, _) = ledger_with(4);
    let (code, out, _) = ephemera(&["ledger", "tail", "-n", "2", &path.to_string_lossy()]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].contains("#3") && lines[0].contains("open") && lines[0].contains("tx=tx-1"),
        "{out}"
    );
    assert!(
        lines[1].contains("close") && lines[1].contains("took=12ms"),
        "{out}"
    );
}
