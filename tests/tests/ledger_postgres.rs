//! File ledgers shipped into one PostgreSQL table (a real server, run as an
//! unprivileged user): every writer keeps its own signed chain, shipping
//! again adds nothing twice, the shipping role can only insert and read,
//! and a row edited or deleted in SQL is found and named.

use std::path::{Path, PathBuf};

use ephemera_shim::ledger::{Event, FileLedger, LedgerKey, TransactionEvent};
use ephemera_tests::postgres::Postgres;
use ephemera_tests::{Run, ephemera};

const ROLE: &str = "ephemera_ledger_writer";

/// A signed file ledger of `records` transaction events, and its public key.
fn file_ledger(dir: &Path, writer: &str, records: usize) -> (PathBuf, PathBuf) {
    let keys = dir.join(format!("{writer}-keys"));
    std::fs::create_dir_all(&keys).unwrap();
    let (private, public) = (keys.join("ledger.key"), keys.join("ledger.pub"));
    ephemera(
        &[
            "ledger",
            "keygen",
            &private.to_string_lossy(),
            &public.to_string_lossy(),
        ],
        &[],
    )
    .ok();
    let path = dir.join(format!("{writer}.jsonl"));
    append(&path, &private, writer, 0..records);
    (path, public)
}

/// Appends transaction events `range` of `writer` to the ledger at `path`.
fn append(path: &Path, key: &Path, writer: &str, range: std::ops::Range<usize>) {
    let key = LedgerKey::load(key, path).unwrap();
    let (ledger, _) = FileLedger::open(path, Some(key)).unwrap();
    for i in range {
        let mut e = TransactionEvent::new(Event::Open, format!("{writer}-tx-{i}"));
        e.caller = Some("spiffe://example.org/orders".into());
        ledger.append_blocking(e).unwrap();
    }
}

fn ship(pg: &Postgres, file: &Path, writer: &str) -> Run {
    ephemera_tests::run(
        std::process::Command::new(ephemera_tests::ephemera_bin())
            .args(["ledger", "ship"])
            .arg(file)
            .args(["--postgres", &pg.url(ROLE), "--writer", writer]),
    )
}

fn verify(pg: &Postgres, keys: &[(&str, &Path)]) -> Run {
    let mut command = std::process::Command::new(ephemera_tests::ephemera_bin());
    command
        .args(["ledger", "verify", "--postgres", &pg.url(ROLE)])
        .args(
            keys.iter()
                .flat_map(|(w, k)| ["--writer-key".to_owned(), format!("{w}={}", k.display())]),
        );
    ephemera_tests::run(&mut command)
}

#[test]
fn shipped_ledgers_keep_one_signed_chain_per_writer_and_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.psql("postgres", &format!("CREATE ROLE {ROLE} LOGIN"))
        .ok();
    let schema = ephemera(&["ledger", "schema"], &[]).ok().to_owned();
    pg.psql("postgres", &schema).ok();

    // Four writers ship at once; shipping again adds nothing.
    let writers = ["shim-a", "shim-b", "shim-c", "shim-d"];
    let ledgers: Vec<(PathBuf, PathBuf)> = writers
        .iter()
        .map(|w| file_ledger(dir.path(), w, 40))
        .collect();
    std::thread::scope(|s| {
        for (writer, (file, _)) in writers.iter().zip(&ledgers) {
            let pg = &pg;
            s.spawn(move || {
                let out = ship(pg, file, writer);
                assert!(
                    out.ok().contains("shipped: 40 new records"),
                    "{}",
                    out.stdout
                );
            });
        }
    });
    let again = ship(&pg, &ledgers[0].0, "shim-a");
    assert!(
        again.ok().contains("shipped: 0 new records"),
        "{}",
        again.stdout
    );
    append(
        &ledgers[0].0,
        &ledgers[0].1.with_file_name("ledger.key"),
        "shim-a",
        40..50,
    );
    let more = ship(&pg, &ledgers[0].0, "shim-a");
    assert!(
        more.ok()
            .contains("shipped: 10 new records of writer \"shim-a\" (40 were there)"),
        "{}",
        more.stdout
    );
    let count = pg.psql("postgres", "SELECT count(*) FROM ephemera_ledger");
    assert_eq!(count.ok(), "170");

    let keys: Vec<(&str, &Path)> = writers
        .iter()
        .zip(&ledgers)
        .map(|(w, (_, public))| (*w, public.as_path()))
        .collect();
    let ok = verify(&pg, &keys);
    assert_eq!(ok.ok().lines().count(), 4, "{}", ok.stdout);
    assert!(
        ok.stdout.contains("writer \"shim-a\": 50 records"),
        "{}",
        ok.stdout
    );

    // One writer's key does not make another's records: under the wrong
    // writer's key the chain is refused.
    let swapped = verify(&pg, &[("shim-a", ledgers[1].1.as_path())]);
    assert_ne!(swapped.code, 0, "{}", swapped.stdout);

    // The shipping role inserts and reads, nothing else.
    for sql in [
        "UPDATE ephemera_ledger SET record = '{}' WHERE seq = 1",
        "DELETE FROM ephemera_ledger WHERE seq = 1",
        "TRUNCATE ephemera_ledger",
    ] {
        let refused = pg.psql(ROLE, sql);
        assert!(
            refused.code != 0 && refused.stderr.contains("permission denied"),
            "{sql}: {}",
            refused.stderr
        );
    }

    // Edited in SQL (by someone with more rights): named by writer and seq.
    pg.psql(
        "postgres",
        "UPDATE ephemera_ledger SET record = replace(record, 'shim-b-tx-7', 'shim-b-tx-X') \
         WHERE writer = 'shim-b' AND seq = 8",
    )
    .ok();
    let edited = verify(&pg, &keys);
    assert_ne!(edited.code, 0);
    assert!(
        edited.stderr.contains("writer \"shim-b\", seq 8"),
        "{}",
        edited.stderr
    );
    // A deleted row leaves a gap that is named too.
    pg.psql(
        "postgres",
        "DELETE FROM ephemera_ledger WHERE writer = 'shim-b'; \
         DELETE FROM ephemera_ledger WHERE writer = 'shim-c' AND seq = 5",
    )
    .ok();
    let deleted = verify(&pg, &keys[2..]);
    assert_ne!(deleted.code, 0);
    assert!(
        deleted.stderr.contains("writer \"shim-c\", seq 5: missing"),
        "{}",
        deleted.stderr
    );

    // A file that is not the one shipped under that name is refused whole.
    let (other, _) = file_ledger(dir.path(), "impostor", 45);
    let diverged = ship(&pg, &other, "shim-d");
    assert_ne!(diverged.code, 0);
    assert!(
        diverged.stderr.contains("differs from the file's"),
        "{}",
        diverged.stderr
    );
    let count = pg.psql(
        "postgres",
        "SELECT count(*) FROM ephemera_ledger WHERE writer = 'shim-d'",
    );
    assert_eq!(count.ok(), "40", "nothing of it was shipped");
}
