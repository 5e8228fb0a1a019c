//! Secret resolution against a real OpenBao: version pins, soft-deleted and
//! destroyed versions, a missing field, and refused callers — through the
//! CLI and through the shim's HTTP gate — with zero requests to OpenBao
//! (counted by a proxy in front of it: OpenBao 2.x only enables audit
//! devices from its configuration file).

use ephemera_tests::ephemera;
use ephemera_tests::net::CountingProxy;
use ephemera_tests::openbao::OpenBao;
use ephemera_tests::workload::{Root, ledger_key, serve_secrets};

const CONFIG: &str = r#"
stores:
  red: { backend: openbao, address: "http://127.0.0.1:PORT", mount: secret, token_file: "TOKEN" }
  files: { backend: file, dir: "DIR", mount: creds }
refs:
  db_latest: { store: red, path: app/db, field: password, policy: app }
  db_v1: { uri: "openbao+kv2://secret/app/db#password?version=1", policy: app }
  db_v2: { uri: "openbao+kv2://secret/app/db#password?version=2", policy: app }
  db_v3: { uri: "openbao+kv2://secret/app/db#password?version=3", policy: app }
  db_v9: { uri: "openbao+kv2://secret/app/db#password?version=9", policy: app }
  db_nofield: { store: red, path: app/db, field: nope, policy: app }
  cert: { store: files, path: tls/cert.pem, policy: app }
  escape: { store: files, path: link/passwd, policy: app }
policies:
  app: { allowed_principals: [orders] }
principals:
  - { match: "spiffe://example.org/orders", principal: orders }
  - { match: "spiffe://example.org/*", principal: everyone }
audit: { ledger: "LEDGER", tenant: acme, salt_file: "SALT", signing_key_file: "SIGNING_KEY",
         checkpoint: { address: "http://127.0.0.1:BAO_PORT", token_file: "CHECKPOINT_TOKEN", path: ephemera/checkpoints/secrets } }
"#;

#[test]
fn secrets_resolve_by_version_and_fail_with_distinct_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bao = OpenBao::start(dir.path());
    for v in ["one-secret-value", "two-secret-value", "three-secret-value"] {
        bao.root(
            "POST",
            "secret/data/app/db",
            &format!(r#"{{"data":{{"password":"{v}","user":"app"}}}}"#),
        )
        .ok();
    }
    bao.root("POST", "secret/delete/app/db", r#"{"versions":[2]}"#)
        .ok();
    bao.root("PUT", "secret/destroy/app/db", r#"{"versions":[1]}"#)
        .ok();
    // The shim's read token: read on secret/data/app/* only.
    bao.root(
        "PUT",
        "sys/policies/acl/secrets-reader",
        &serde_json::json!({"policy": "path \"secret/data/app/*\" { capabilities = [\"read\"] }"})
            .to_string(),
    )
    .ok();
    let reader = bao
        .root(
            "POST",
            "auth/token/create",
            r#"{"policies":["secrets-reader"],"no_default_policy":true}"#,
        )
        .ok()
        .json();
    let token_file = dir.path().join("reader-token");
    std::fs::write(
        &token_file,
        reader["auth"]["client_token"].as_str().unwrap(),
    )
    .unwrap();
    let proxy = CountingProxy::start(bao.port);

    let files = dir.path().join("files");
    std::fs::create_dir_all(files.join("tls")).unwrap();
    std::fs::write(files.join("tls/cert.pem"), "CERT-secret-value\n").unwrap();
    std::os::unix::fs::symlink("/etc", files.join("link")).unwrap();
    let config = dir.path().join("secrets.yaml");
    let audit_ledger = dir.path().join("secrets-audit.jsonl");
    let checkpoint_token = dir.path().join("checkpoint-token");
    bao.create_only_token("ephemera/checkpoints/secrets", &checkpoint_token);
    let salt = dir.path().join("tenant-salt");
    std::fs::write(&salt, [42u8; 32]).unwrap();
    std::fs::write(
        &config,
        CONFIG
            .replace(
                "SIGNING_KEY",
                &ledger_key(dir.path()).0.display().to_string(),
            )
            .replace("BAO_PORT", &bao.port.to_string())
            .replace("CHECKPOINT_TOKEN", &checkpoint_token.display().to_string())
            .replace("PORT", &proxy.port.to_string())
            .replace("TOKEN", &token_file.display().to_string())
            .replace("DIR", &files.display().to_string())
            .replace("LEDGER", &audit_ledger.display().to_string())
            .replace("SALT", &salt.display().to_string()),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let get = |name: &str, caller: &str| {
        ephemera(
            &["secrets", "get", name, "--as", caller, "--config", &cfg],
            &[],
        )
    };
    let orders = "spiffe://example.org/orders";

    assert_eq!(get("db_latest", orders).ok(), "three-secret-value");
    assert_eq!(get("db_v3", orders).ok(), "three-secret-value");
    assert_eq!(get("cert", orders).ok(), "CERT-secret-value");
    let expect_err = |name: &str, needle: &str| {
        let r = get(name, orders);
        assert_eq!(r.code, 1, "{name}: {}", r.stdout);
        assert!(r.stderr.contains(needle), "{name}: {}", r.stderr);
        assert!(!r.stderr.contains("secret-value"), "values never in errors");
    };
    expect_err("db_v2", "secret version deleted");
    expect_err("db_v1", "secret version destroyed");
    expect_err("db_v9", "secret not found");
    expect_err("db_nofield", "no field \"nope\"");
    expect_err("escape", "secret not found");
    expect_err("nope", "unknown secret");

    // Denied before any backend I/O: OpenBao sees nothing.
    let before = proxy.requests();
    assert!(before > 0, "the proxy sees the authorized reads");
    let r = get("db_latest", "spiffe://example.org/research");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not authorized"), "{}", r.stderr);
    let r = get("db_latest", "spiffe://other.org/x");
    assert_eq!(r.code, 1);
    assert_eq!(
        proxy.requests(),
        before,
        "zero requests reached OpenBao for unauthorized callers"
    );
    get("db_latest", orders).ok();
    assert!(
        proxy.requests() > before,
        "an authorized read does reach it"
    );

    // Every decision is in the audit ledger; the secret only as an HMAC.
    let text = std::fs::read_to_string(&audit_ledger).unwrap();
    let events: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        events.iter().filter(|e| *e == "allow").count(),
        4,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "deny").count(),
        3,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "error").count(),
        5,
        "{events:?}"
    );
    assert!(text.contains("hmac-sha256:"));
    for forbidden in ["secret-value", "openbao+kv2://", "app/db", "tls/cert.pem"] {
        assert!(!text.contains(forbidden), "{forbidden} in the audit ledger");
    }
    // Each run checkpointed the head it left, the last one all 12 records.
    let newest = bao
        .newest_key("ephemera/checkpoints/secrets")
        .expect("checkpoints");
    assert_eq!(newest, "00000000000000000012");
    let checkpoint = dir.path().join("checkpoint.json");
    let stored = bao.root(
        "GET",
        &format!("secret/data/ephemera/checkpoints/secrets/{newest}"),
        "",
    );
    std::fs::write(&checkpoint, stored.ok().body).unwrap();
    let verified = ephemera(
        &[
            "ledger",
            "verify",
            &audit_ledger.to_string_lossy(),
            "--public-key",
            &ledger_key(dir.path()).1.to_string_lossy(),
            "--checkpoint",
            &checkpoint.to_string_lossy(),
        ],
        &[],
    );
    assert!(
        verified.ok().contains("holds the checkpoint at seq 12"),
        "{}",
        verified.stdout
    );
}

#[test]
fn check_validates_and_plans_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("secrets.yaml");
    std::fs::write(
        &config,
        CONFIG
            .replace(
                "SIGNING_KEY",
                &ledger_key(dir.path()).0.display().to_string(),
            )
            .replace("PORT", "1")
            .replace("TOKEN", "/nonexistent")
            .replace("DIR", "/nonexistent"),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let ok = ephemera(&["secrets", "check", "--config", &cfg], &[]);
    assert!(ok.ok().starts_with("ok: 2 stores, 8 refs"), "{}", ok.stdout);
    let plan = ephemera(
        &[
            "secrets",
            "check",
            "--config",
            &cfg,
            "--name",
            "db_v3",
            "--as",
            "spiffe://example.org/orders",
        ],
        &[],
    );
    assert_eq!(
        plan.ok(),
        "db_v3: principal orders, store red, openbao+kv2://secret/app/db#password?version=3"
    );

    std::fs::write(
        &config,
        "# problems, each with its line\nrefs:\n  ok: { store: s, path: x, policy: p }\n  a: { store: missing, path: x, policy: nope }\nstores: { s: { backend: env } }\npolicies:\n  p: { allowed_principals: [x] }\nprincipals:\n  - { match: \"spiffe://e.org/*\", principal: x }\n  - { match: \"spiffe://e.org/a\", principal: y }\n",
    )
    .unwrap();
    let bad = ephemera(&["secrets", "check", "--config", &cfg], &[]);
    assert_eq!(bad.code, 2);
    for expected in [
        ":4: refs.a: unknown store \"missing\"",
        ":4: refs.a: unknown policy \"nope\"",
        ":10: principals[1]: can never match",
    ] {
        assert!(bad.stderr.contains(expected), "{expected}: {}", bad.stderr);
    }
}

#[test]
fn env_stores_read_prefixed_variables() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("secrets.yaml");
    std::fs::write(
        &config,
        "stores:\n  envs: { backend: env, prefix: APP_ }\nrefs:\n  api: { store: envs, path: API_KEY, policy: p }\n  gone: { store: envs, path: MISSING, policy: p }\npolicies:\n  p: { allowed_principals: [orders] }\nprincipals:\n  - { match: \"spiffe://example.org/orders\", principal: orders }\n",
    )
    .unwrap();
    let cfg = config.display().to_string();
    let env = [("APP_API_KEY", "env-secret-value")];
    let get = |name: &str| {
        ephemera(
            &[
                "secrets",
                "get",
                name,
                "--as",
                "spiffe://example.org/orders",
                "--config",
                &cfg,
            ],
            &env,
        )
    };
    assert_eq!(get("api").ok(), "env-secret-value");
    let r = get("gone");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("secret not found"), "{}", r.stderr);
}

#[test]
fn the_http_gate_reads_nothing_for_denied_remembered_replayed_or_exhausted_requests() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "research", "api"]);
    let bao = OpenBao::start(dir.path());
    bao.root(
        "POST",
        "secret/data/app/db",
        r#"{"data":{"password":"gate-secret-value"}}"#,
    )
    .ok();
    bao.root(
        "POST",
        "secret/data/app/once",
        r#"{"data":{"password":"once-secret-value"}}"#,
    )
    .ok();
    let proxy = CountingProxy::start(bao.port);
    let kv_token = dir.path().join("kv-token");
    std::fs::write(&kv_token, "root").unwrap();
    let config = dir.path().join("secrets.yaml");
    std::fs::write(
        &config,
        format!(
            "stores:\n  red: {{ backend: openbao, address: \"http://127.0.0.1:{}\", mount: secret, token_file: \"{}\" }}\nrefs:\n  db: {{ store: red, path: app/db, field: password, policy: app }}\n  once: {{ store: red, path: app/once, field: password, policy: once }}\npolicies:\n  app: {{ allowed_principals: [orders] }}\n  once: {{ allowed_principals: [orders], grant: {{ ttl_secs: 300, max_uses: 1 }} }}\nprincipals:\n  - {{ match: \"spiffe://example.org/orders\", principal: orders }}\n  - {{ match: \"spiffe://example.org/*\", principal: everyone }}\n",
            proxy.port,
            kv_token.display()
        ),
    )
    .unwrap();
    let shim = serve_secrets(dir.path(), &root, "api", &config);
    let token = |caller: &str, jti: &str| root.secrets_token(caller, "api", jti);
    let resolve = |name: &str, token: &str| {
        let r = shim.resolve_secret(name, token);
        (r.status, r.body)
    };

    let first = token("orders", "o-1");
    assert_eq!(resolve("db", &first).0, 200);
    assert_eq!(resolve("once", &token("orders", "o-2")).0, 200);
    let reads = proxy.requests();
    assert!(reads >= 2, "authorized reads reach OpenBao");
    for (what, name, token, reason) in [
        (
            "denied",
            "db",
            token("research", "r-1"),
            "is not authorized",
        ),
        (
            "remembered",
            "db",
            token("research", "r-2"),
            "recently denied",
        ),
        ("replayed", "db", first.clone(), "token replayed"),
        (
            "exhausted",
            "once",
            token("orders", "o-3"),
            "uses exhausted",
        ),
        ("unknown", "nope", token("orders", "o-4"), "unknown secret"),
    ] {
        let (status, body) = resolve(name, &token);
        assert_ne!(status, 200, "{what}: {body}");
        assert!(body.contains(reason), "{what}: {body}");
        assert_eq!(proxy.requests(), reads, "{what}: OpenBao was asked");
    }
    assert_eq!(resolve("db", &token("orders", "o-5")).0, 200);
    assert!(
        proxy.requests() > reads,
        "a fresh authorized read does reach it"
    );
}
