//! `ephemera ledger verify` and `ephemera ledger tail` on a real ledger file.

mod common;

use common::ephemera;

use ephemera_shim::ledger::{Event, FileLedger, TransactionEvent};

fn ledger_with(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let (ledger, _) = FileLedger::open(&path).unwrap();
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
    (dir, path)
}

#[test]
fn verify_accepts_an_intact_ledger_and_names_the_first_broken_record() {
    let (_dir, path) = ledger_with(6);
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
    let (_dir, path) = ledger_with(4);
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
