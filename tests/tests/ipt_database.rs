//! Per-transaction database credentials through real Envoy: OpenBao's
//! database secrets engine on a real PostgreSQL creates a user for one
//! transaction with `SELECT` on one table; the app (psycopg) can do that
//! and nothing else, and the user's lease is revoked when the request ends,
//! which also ends the sessions it opened.

use std::process::Command;
use std::time::Duration;

use ephemera_tests::net::{free_port, get, wait_until};
use ephemera_tests::openbao::{OpenBao, SHIM_POLICY};
use ephemera_tests::postgres::Postgres;
use ephemera_tests::procs::Proc;
use ephemera_tests::workload::{Root, Sidecar, ledger_key};
use ephemera_tests::{python, repo_root};

const BILLING: &str = "spiffe://example.org/billing";
const SUPERUSER_PASSWORD: &str = "openbao-only-superuser-password";

const FILTER: &str = r#"
inbound:
  transactions:
    - path: /invoices
      resource: postgres://orders/invoices
      broker: orders-db
      credential_headers: { dsn: x-db-dsn }
"#;

/// The operator's role: the user may `SELECT` on `invoices` only; revoking
/// it refuses new logins, ends the user's sessions, then drops the user.
const CREATION: &str = r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON invoices TO "{{name}}";"#;
const REVOCATION: &str = r#"ALTER ROLE "{{name}}" NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}'; REVOKE ALL ON invoices FROM "{{name}}"; DROP ROLE IF EXISTS "{{name}}";"#;

fn ledger(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_database_user_lives_for_one_transaction_and_can_read_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start_with_password(SUPERUSER_PASSWORD);
    pg.psql(
        "postgres",
        "CREATE TABLE invoices (id int, total int); INSERT INTO invoices VALUES (1, 100), (2, 250);
         CREATE TABLE customers (id int, name text); INSERT INTO customers VALUES (1, 'ada');",
    )
    .ok();

    let bao = OpenBao::start(dir.path());
    bao.root("POST", "sys/mounts/database", r#"{"type":"database"}"#)
        .ok();
    let connection = serde_json::json!({
        "plugin_name": "postgresql-database-plugin",
        "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres", pg.port),
        "username": "postgres",
        "password": SUPERUSER_PASSWORD,
        "allowed_roles": ["orders-invoices-read"],
    });
    bao.root("POST", "database/config/orders", &connection.to_string())
        .ok();
    let role = serde_json::json!({
        "db_name": "orders",
        "creation_statements": [CREATION],
        "revocation_statements": [REVOCATION],
        "default_ttl": "60s",
        "max_ttl": "60s",
    });
    bao.root(
        "POST",
        "database/roles/orders-invoices-read",
        &role.to_string(),
    )
    .ok();
    // The shim's token may read this role's credentials and revoke their
    // leases, and nothing more.
    let policy = format!(
        "{SHIM_POLICY}path \"database/creds/orders-invoices-read\" {{ capabilities = [\"read\"] }}\npath \"sys/leases/revoke/database/creds/orders-invoices-read/*\" {{ capabilities = [\"update\"] }}\n"
    );
    bao.root(
        "PUT",
        "sys/policies/acl/ephemera-shim",
        &serde_json::json!({ "policy": policy }).to_string(),
    )
    .ok();

    let root = Root::new(&dir.path().join("root"), &["orders", "billing", "ci"]);
    let ledger_path = dir.path().join("ledger.jsonl");
    let ipt = dir.path().join("ipt.yaml");
    std::fs::write(
        &ipt,
        format!(
            r#"ledger: {{ path: "{}", signing_key_file: "{}" }}
brokers:
  orders-db:
    kind: database
    address: "http://127.0.0.1:{}"
    token_file: "{}"
    roles: {{ "postgres://orders/invoices": {{ read: orders-invoices-read }} }}
    dsn: "postgresql://{{username}}:{{password}}@127.0.0.1:{}/postgres"
    max_ttl_secs: 60
policy:
  - {{ callers: ["spiffe://example.org/orders"], resources: ["postgres://orders/invoices"], actions: [read], broker: orders-db }}
"#,
            ledger_path.display(),
            ledger_key(dir.path()).0.display(),
            bao.port,
            bao.shim_token_file.display(),
            pg.port,
        ),
    )
    .unwrap();

    let app_port = free_port();
    let mut app = Proc::spawn(
        "db-app",
        dir.path(),
        Command::new(python())
            .arg(repo_root().join("tests/peers/db_app.py"))
            .arg(app_port.to_string()),
    );
    app.wait_for_line("listening", Duration::from_secs(10));
    let ipt_arg = ipt.display().to_string();
    let sidecar = Sidecar::start_with(
        dir.path(),
        &root,
        "billing",
        app_port,
        Some(FILTER),
        false,
        &["--ipt-config", &ipt_arg],
    );

    let caller = root.mint("orders", BILLING, &[]);
    let r = get(
        sidecar.inbound,
        "/invoices",
        &[("authorization", &format!("Bearer {caller}"))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let during = r.json();
    println!("during the transaction: {during}");
    assert_eq!(
        during["read"]["ok"],
        serde_json::json!([[1, 100], [2, 250]]),
        "the one table reads"
    );
    assert_eq!(
        during["other_table"]["sqlstate"], "42501",
        "another table: permission denied"
    );
    assert_eq!(
        during["write"]["sqlstate"], "42501",
        "a write: permission denied"
    );

    let closed = wait_until(Duration::from_secs(10), || ledger(&ledger_path).len() == 2);
    let records = ledger(&ledger_path);
    assert!(closed.is_some(), "open and close recorded: {records:?}");
    assert_eq!(records[0]["event"], "open");
    assert_eq!(records[1]["event"], "close", "{records:?}");
    let lease = records[0]["revocation"].as_str().unwrap();
    assert!(
        lease.starts_with("lease database/creds/orders-invoices-read/"),
        "the ledger names the lease: {lease}"
    );
    assert_eq!(records[1]["revocation"], records[0]["revocation"]);
    assert!(
        records[0]["blast_radius"]
            .as_str()
            .unwrap()
            .contains("role orders-invoices-read (read on postgres://orders/invoices)")
    );

    let after = get(app_port, "/after", &[]).json();
    println!("after the close: {after}");
    assert_eq!(
        after["kept_connection"]["sqlstate"], "57P01",
        "the session opened during the transaction was terminated"
    );
    assert!(
        after["new_connection"]["error"]
            .as_str()
            .unwrap()
            .contains("password authentication failed"),
        "the user cannot log in again"
    );
    let users = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-%'",
    );
    assert_eq!(users.stdout.trim(), "0", "the user is gone");

    // The password reached the app only: not the ledger, not any log.
    let dsn = during["dsn"].as_str().unwrap();
    let password = dsn
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .unwrap();
    assert!(password.len() >= 16, "a generated password: {dsn}");
    let seen = format!(
        "{}{}{}",
        sidecar.proc.stdout(),
        sidecar.proc.stderr(),
        std::fs::read_to_string(&ledger_path).unwrap()
    );
    for secret in [password, SUPERUSER_PASSWORD, bao.shim_token.as_str()] {
        assert!(
            !seen.contains(secret),
            "a secret leaked into a log or the ledger"
        );
    }
}
