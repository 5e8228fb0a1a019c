//! Ledgers in one PostgreSQL table (a real server, run as an unprivileged
//! user), shipped from files or written by shims directly: every writer
//! keeps its own signed chain, shipping again adds nothing twice, the
//! writing role can only insert and read, a row edited or deleted in SQL is
//! found and named, and with PostgreSQL down no transaction opens.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ephemera_shim::ledger::{Event, FileLedger, LedgerKey, TransactionEvent};
use ephemera_tests::net::{get, send, wait_until};
use ephemera_tests::openbao::OpenBao;
use ephemera_tests::postgres::Postgres;
use ephemera_tests::procs::Proc;
use ephemera_tests::tls::TestCa;
use ephemera_tests::workload::{Root, ledger_key};
use ephemera_tests::{Run, ephemera, ephemera_bin};
use serde_json::{Value, json};

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
    let key = LedgerKey::load(key, Some(path)).unwrap();
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

/// A shim whose IPT ledger is the table, as `writer`; its socket and
/// public key.
fn table_shim(
    dir: &Path,
    root: &Root,
    bao: &OpenBao,
    pg: &Postgres,
    writer: &str,
) -> (PathBuf, PathBuf, Proc) {
    table_shim_with(dir, root, bao, &pg.url(ROLE), writer, "")
}

/// As [`table_shim`], reaching the table at `url`, with `extra` fields in
/// `ledger.postgres`.
fn table_shim_with(
    dir: &Path,
    root: &Root,
    bao: &OpenBao,
    url: &str,
    writer: &str,
    extra: &str,
) -> (PathBuf, PathBuf, Proc) {
    let dir = dir.join(writer);
    std::fs::create_dir_all(&dir).unwrap();
    let (private, public) = ledger_key(&dir);
    let config = dir.join("ipt.yaml");
    std::fs::write(
        &config,
        format!(
            "ledger:\n  postgres: {{ url: \"{}\", writer: {writer}, timeout_ms: 2000{extra} }}\n  signing_key_file: \"{}\"\nbrokers:\n  vault: {{ kind: openbao, address: \"http://127.0.0.1:{}\", token_file: \"{}\", ttl_secs: 60, num_uses: 10 }}\npolicy:\n  - {{ callers: [\"spiffe://example.org/orders\"], resources: [\"secret/data/orders/*\"], actions: [read], broker: vault }}\n",
            url,
            private.display(),
            bao.port,
            bao.shim_token_file.display()
        ),
    )
    .unwrap();
    let socket = dir.join("run/shim.sock");
    let proc = Proc::spawn(
        "shim",
        &dir,
        Command::new(ephemera_bin())
            .arg("serve")
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--ipt-config")
            .arg(&config)
            .envs(root.env("billing")),
    );
    wait_until(Duration::from_secs(10), || {
        get(&socket, "/healthz", &[]).status == 200
    })
    .unwrap_or_else(|| panic!("shim {writer} up: {}", proc.stderr()));
    (socket, public, proc)
}

/// Opens a read of `secret/data/orders/a` as `caller`: status and body.
fn open(socket: &Path, id: &str, caller: &str) -> (u16, Value) {
    let body = json!({"transaction_id": id, "token": caller, "resource": "secret/data/orders/a",
                      "action": "read", "broker": "vault"});
    let r = send(
        socket,
        "POST",
        "/v1/transactions",
        &[("content-type", "application/json")],
        &body.to_string(),
    );
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

fn close(socket: &Path, id: &str) -> u16 {
    send(
        socket,
        "POST",
        &format!("/v1/transactions/{id}/close"),
        &[("content-type", "application/json")],
        &json!({"outcome": {"kind": "responded", "status": 200}}).to_string(),
    )
    .status
}

fn txid(shim: usize, n: usize) -> String {
    format!("3f2b8c1e-9d4a-4b7e-8f10-{shim:04x}{n:08x}")
}

#[test]
fn four_shims_write_one_table_and_without_postgres_no_transaction_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = Postgres::start();
    pg.psql("postgres", &format!("CREATE ROLE {ROLE} LOGIN"))
        .ok();
    let schema = ephemera(&["ledger", "schema"], &[]).ok().to_owned();
    pg.psql("postgres", &schema).ok();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let bao = OpenBao::start(dir.path());
    let writers = ["shim-a", "shim-b", "shim-c", "shim-d"];
    let shims: Vec<_> = writers
        .iter()
        .map(|w| table_shim(dir.path(), &root, &bao, &pg, w))
        .collect();
    let caller = root.mint("orders", "spiffe://example.org/billing", &[]);

    // Four shims, eight concurrent transactions each, opened and closed.
    std::thread::scope(|s| {
        for (i, (socket, _, _)) in shims.iter().enumerate() {
            for lane in 0..8 {
                let caller = &caller;
                s.spawn(move || {
                    for n in 0..4 {
                        let id = txid(i, lane * 100 + n);
                        let (status, body) = open(socket, &id, caller);
                        assert_eq!(status, 200, "{body}");
                        assert_eq!(close(socket, &id), 204);
                    }
                });
            }
        }
    });
    let count = || {
        pg.psql("postgres", "SELECT count(*) FROM ephemera_ledger")
            .ok()
            .to_owned()
    };
    assert_eq!(
        count(),
        (4 * 8 * 4 * 2).to_string(),
        "open and close of each"
    );
    let keys: Vec<(&str, &Path)> = writers
        .iter()
        .zip(&shims)
        .map(|(w, (_, public, _))| (*w, public.as_path()))
        .collect();
    let verified = verify(&pg, &keys);
    assert!(
        verified.ok().contains("writer \"shim-c\": 64 records"),
        "{}",
        verified.stdout
    );

    // PostgreSQL stopped: opens fail closed and leave no live credential.
    let tokens = bao.token_count();
    pg.stop();
    let (status, body) = open(&shims[0].0, &txid(9, 1), &caller);
    assert_eq!(status, 503, "{body}");
    assert!(body.get("credential").is_none(), "{body}");
    assert_eq!(bao.token_count(), tokens, "the issued token was revoked");
    let logged = shims[0].2.stderr();
    assert!(
        logged.contains("postgres table ephemera_ledger"),
        "{logged}"
    );

    // Restarted: service resumes by itself, and every acknowledged record
    // is there.
    pg.restart();
    let mut acknowledged = vec![];
    let resumed = wait_until(Duration::from_secs(15), || {
        let id = txid(9, 2 + acknowledged.len());
        let (status, _) = open(&shims[1].0, &id, &caller);
        if status == 200 {
            acknowledged.push(id);
        }
        status == 200
    });
    assert!(resumed.is_some(), "opens resume after PostgreSQL returns");
    for (i, (socket, _, _)) in shims.iter().enumerate() {
        let id = txid(i, 999);
        assert_eq!(open(socket, &id, &caller).0, 200);
        acknowledged.push(id);
    }
    for id in &acknowledged {
        let rows = pg.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM ephemera_ledger WHERE record::json->>'transaction_id' = '{id}' \
                 AND record::json->>'event' = 'open'"
            ),
        );
        assert_eq!(rows.ok(), "1", "open of {id} acknowledged and kept");
    }
    assert!(verify(&pg, &keys).ok().lines().count() == 4);

    // An edited row is named.
    pg.psql(
        "postgres",
        "UPDATE ephemera_ledger SET record = replace(record, '3f2b8c1e', '3f2b8c1f') \
         WHERE writer = 'shim-d' AND seq = 2",
    )
    .ok();
    let edited = verify(&pg, &keys);
    assert!(
        edited.code != 0 && edited.stderr.contains("writer \"shim-d\", seq 2"),
        "{}",
        edited.stderr
    );
}

#[test]
fn postgres_is_reached_over_verified_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "pg");
    let pg = Postgres::start_tls(&ca);
    pg.psql("postgres", &format!("CREATE ROLE {ROLE} LOGIN; CREATE ROLE ephemera_shim LOGIN; CREATE ROLE ephemera_publisher LOGIN"))
        .ok();
    pg.psql("postgres", ephemera(&["ledger", "schema"], &[]).ok())
        .ok();
    pg.psql("postgres", ephemera(&["identity", "schema"], &[]).ok())
        .ok();
    let ca_file = ca.cert.display().to_string();

    // The server takes TLS only.
    let plain = pg.url(ROLE) + "?sslmode=disable";
    let (file, public) = file_ledger(dir.path(), "shim-a", 3);
    let refused = ephemera_tests::run(
        Command::new(ephemera_bin())
            .args(["ledger", "ship"])
            .arg(&file)
            .args(["--postgres", &plain, "--writer", "shim-a"]),
    );
    assert!(
        refused.code != 0 && refused.stderr.contains("no encryption"),
        "{}",
        refused.stderr
    );
    // Verified against the platform's roots, the test CA is unknown.
    let unverified = ship(&pg, &file, "shim-a");
    assert!(
        unverified.code != 0 && unverified.stderr.contains("UnknownIssuer"),
        "{}",
        unverified.stderr
    );
    let shipped = ephemera_tests::run(
        Command::new(ephemera_bin())
            .args(["ledger", "ship"])
            .arg(&file)
            .args([
                "--postgres",
                &pg.url(ROLE),
                "--writer",
                "shim-a",
                "--ca-file",
                &ca_file,
            ]),
    );
    assert!(shipped.ok().contains("shipped: 3 new records"));

    // A shim writes its ledger over TLS.
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let bao = OpenBao::start(dir.path());
    let extra = format!(", ca_file: \"{ca_file}\"");
    let (socket, shim_public, _shim) =
        table_shim_with(dir.path(), &root, &bao, &pg.url(ROLE), "shim-b", &extra);
    let caller = root.mint("orders", "spiffe://example.org/billing", &[]);
    let (status, body) = open(&socket, &txid(1, 1), &caller);
    assert_eq!(status, 200, "{body}");
    let mut command = Command::new(ephemera_bin());
    command
        .args([
            "ledger",
            "verify",
            "--postgres",
            &pg.url(ROLE),
            "--ca-file",
            &ca_file,
        ])
        .arg("--writer-key")
        .arg(format!("shim-a={}", public.display()))
        .arg("--writer-key")
        .arg(format!("shim-b={}", shim_public.display()));
    let verified = ephemera_tests::run(&mut command);
    assert!(
        verified.ok().contains("writer \"shim-b\": 1 records"),
        "{}",
        verified.stdout
    );

    // And the bundle store too.
    let published = ephemera(
        &[
            "identity",
            "publish",
            &root.dir.display().to_string(),
            "--postgres",
            &pg.url("ephemera_publisher"),
            "--ca-file",
            &ca_file,
        ],
        &[],
    );
    published.ok();
    assert!(
        published.stderr.contains("revision 1 published"),
        "{}",
        published.stderr
    );
}
