//! Egress injection through real Envoy: the app calls an external API through
//! its outbound listener carrying no secret; the API receives the secret the
//! shim resolved for the workload's identity. A secret the workload may not
//! use gives a local 403 and nothing leaves.

use ephemera_tests::net::get;
use ephemera_tests::workload::{EchoApp, Root, Sidecar, ledger_key};

const SECRET: &str = "egress-secret-value-123";

#[test]
fn the_upstream_receives_the_secret_the_app_never_held() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let files = dir.path().join("files");
    std::fs::create_dir_all(files.join("api")).unwrap();
    std::fs::write(files.join("api/token"), format!("{SECRET}\n")).unwrap();
    let ledger = dir.path().join("secrets-audit.jsonl");
    let salt = dir.path().join("salt");
    std::fs::write(&salt, [9u8; 32]).unwrap();
    let secrets = dir.path().join("secrets.yaml");
    std::fs::write(
        &secrets,
        format!(
            "stores:\n  files: {{ backend: file, dir: \"{}\", mount: creds }}\n  gone: {{ backend: file, dir: \"{}/not-mounted\", mount: gone }}\nrefs:\n  gone_token: {{ store: gone, path: api/token, policy: egress }}\n  api_token: {{ store: files, path: api/token, policy: egress }}\n  cached_token: {{ store: files, path: api/token, policy: egress, cache_ttl_secs: 60 }}\n  billing_only: {{ store: files, path: api/token, policy: billing }}\npolicies:\n  egress: {{ allowed_principals: [orders] }}\n  billing: {{ allowed_principals: [billing] }}\nprincipals:\n  - {{ match: \"spiffe://example.org/orders\", principal: orders }}\n  - {{ match: \"spiffe://example.org/billing\", principal: billing }}\naudit: {{ ledger: \"{}\", tenant: acme, salt_file: \"{}\", signing_key_file: \"{}\" }}\n",
            files.display(),
            dir.path().display(),
            ledger.display(),
            salt.display(),
            ledger_key(dir.path()).0.display()
        ),
    )
    .unwrap();
    let api = EchoApp::start(dir.path(), "external-api", 200);
    let app = EchoApp::start(dir.path(), "orders-app", 200);
    let config = format!(
        "outbound:\n  egress:\n    - {{ host: api.example.com, address: \"127.0.0.1:{0}\", secret: api_token, inject: {{ as: bearer }} }}\n    - {{ host: basic.example.com, address: \"127.0.0.1:{0}\", secret: api_token, inject: {{ as: basic, username: svc }} }}\n    - {{ host: forbidden.example.com, address: \"127.0.0.1:{0}\", secret: billing_only, inject: {{ as: header, header: x-api-key }} }}\n    - {{ host: cached.example.com, address: \"127.0.0.1:{0}\", secret: cached_token, inject: {{ as: header, header: x-api-key }} }}\n    - {{ host: gone.example.com, address: \"127.0.0.1:{0}\", secret: gone_token, inject: {{ as: bearer }} }}\n",
        api.port
    );
    let sidecar = Sidecar::start_egress(dir.path(), &root, app.port, &config, &secrets);
    let out = sidecar.outbound.unwrap();

    let seen = get(
        out,
        "/v1/quotes",
        &[
            ("host", "api.example.com"),
            ("authorization", "Bearer app-supplied"),
        ],
    )
    .json();
    assert_eq!(seen["headers"]["authorization"], format!("Bearer {SECRET}"));
    let seen = get(out, "/v1/quotes", &[("host", "basic.example.com")]).json();
    let expected = format!("Basic {}", base64_of(&format!("svc:{SECRET}")));
    assert_eq!(seen["headers"]["authorization"], expected);

    let before = api.requests().len();
    let r = get(out, "/v1/x", &[("host", "forbidden.example.com")]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("not authorized"));
    assert_eq!(api.requests().len(), before, "nothing was sent upstream");

    // The secret's store is unavailable: 503, and nothing leaves without it.
    let r = get(out, "/v1/x", &[("host", "gone.example.com")]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(api.requests().len(), before, "nothing was sent upstream");

    // A ref that allows caching is resolved once per worker, not per request:
    // the shim (which audits every resolution) is asked at most once per worker.
    let allows = || {
        std::fs::read_to_string(&ledger)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"event\":\"allow\""))
            .count()
    };
    let before = allows();
    for _ in 0..8 {
        let seen = get(out, "/v1/cached", &[("host", "cached.example.com")]).json();
        assert_eq!(seen["headers"]["x-api-key"], SECRET);
    }
    let workers =
        get(&sidecar.admin, "/server_info", &[]).json()["command_line_options"]["concurrency"]
            .as_u64()
            .unwrap() as usize;
    let asked = allows() - before;
    assert!(
        (1..=workers).contains(&asked) && asked < 8,
        "8 requests, {workers} workers, the shim asked {asked} times"
    );

    let s = sidecar.stats();
    assert_eq!(s["ephemera.outbound.egress.injected"], 10);
    assert_eq!(s["ephemera.outbound.egress.denied"], 1);
    assert_eq!(s["ephemera.outbound.egress.failed"], 1);
    // The value never appears in logs or stats.
    let logs = format!("{}{}", sidecar.proc.stdout(), sidecar.proc.stderr());
    assert!(!logs.contains(SECRET), "secret in the sidecar's output");
    let stats_text = ephemera_tests::net::get(&sidecar.admin, "/stats", &[]).body;
    assert!(!stats_text.contains(SECRET));
    assert!(!std::fs::read_to_string(&ledger).unwrap().contains(SECRET));
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
