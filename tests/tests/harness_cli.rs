//! `ephemera-harness`: a dry run of a plugin configuration for people
//! writing one, and the scenario table from the command line.

use std::process::Command;

use ephemera_tests::{repo_root, run};

fn harness(args: &[&str]) -> ephemera_tests::Run {
    run(Command::new(env!("CARGO_BIN_EXE_ephemera-harness")).args(args))
}

#[test]
fn a_dry_run_shows_what_the_filter_does_with_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "direction: inbound\ninbound:\n  routes:\n    - { path: \"/admin/*\", allow: [\"spiffe://example.org/billing\"] }\n    - { path: \"/*\", allow: [\"spiffe://example.org/*\"] }\n",
    )
    .unwrap();
    let request = dir.path().join("request.yaml");
    std::fs::write(
        &request,
        "- request:\n    headers: { \":method\": GET, \":path\": /admin/x, authorization: \"Bearer {token:orders}\" }\n- request:\n    headers: { \":method\": GET, \":path\": /orders, authorization: \"Bearer {token:orders}\", x-ephemera-caller: forged }\n",
    )
    .unwrap();
    let (c, r) = (config.to_string_lossy(), request.to_string_lossy());
    let out = harness(&["dry-run", "--config", &c, "--request", &r]);
    let text = out.ok();
    let verdicts: Vec<&str> = text.split("---\n").filter(|s| !s.is_empty()).collect();
    assert_eq!(verdicts.len(), 2, "{text}");
    assert!(verdicts[0].starts_with("status: 403"), "{text}");
    assert!(
        verdicts[0].contains("is not allowed on this route"),
        "the filter's log: {text}"
    );
    assert!(verdicts[1].starts_with("status: 200"), "{text}");
    assert!(
        verdicts[1].contains("x-ephemera-caller: spiffe://example.org/orders")
            && !verdicts[1].contains("forged")
            && !verdicts[1].contains("authorization"),
        "{text}"
    );

    // An expectation that does not hold fails the run.
    std::fs::write(
        &request,
        "headers: { \":method\": GET, \":path\": /orders }\nexpect: { status: 200 }\n",
    )
    .unwrap();
    let out = harness(&["dry-run", "--config", &c, "--request", &r]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("not as expected: status 401 (expected 200)"),
        "{}",
        out.stdout
    );

    // A configuration the filter refuses is reported with its reason.
    std::fs::write(
        &config,
        "direction: inbound\ninbound: { cache_size: lots }\n",
    )
    .unwrap();
    let out = harness(&["dry-run", "--config", &c, "--request", &r]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.starts_with("configuration: refused"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("inbound.cache_size: invalid type"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_table_runs_from_the_command_line() {
    let table = repo_root().join("tests/scenarios/filter.yaml");
    for host in ["proxy-wasm", "component"] {
        let out = harness(&["--host", host, "table", &table.to_string_lossy()]);
        assert!(
            out.ok().contains(" scenarios, 0 failed"),
            "{host}: {}",
            out.stdout
        );
    }

    // Workers: the proxy-wasm build on two; the component has one instance.
    let file = table.to_string_lossy();
    let out = harness(&["--workers", "2", "table", &file]);
    assert!(out.ok().contains(" scenarios, 0 failed"), "{}", out.stdout);
    let out = harness(&["--host", "component", "--workers", "2", "table", &file]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("the component host runs one instance"),
        "{}",
        out.stderr
    );

    let out = harness(&["table", "/nonexistent.yaml"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("/nonexistent.yaml"), "{}", out.stderr);
}

#[test]
fn a_dry_run_can_ask_a_real_shim_and_mint_from_a_real_root() {
    use ephemera_tests::workload::{Root, serve_secrets};

    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["api", "orders"]);
    let files = dir.path().join("files");
    std::fs::create_dir_all(files.join("api")).unwrap();
    std::fs::write(files.join("api/token"), "live-secret-value").unwrap();
    let secrets = dir.path().join("secrets.yaml");
    std::fs::write(
        &secrets,
        format!(
            "stores: {{ files: {{ backend: file, dir: \"{}\", mount: creds }} }}\nrefs: {{ api_token: {{ store: files, path: api/token, policy: own }} }}\npolicies: {{ own: {{ allowed_principals: [api] }} }}\nprincipals: [{{ match: \"spiffe://example.org/api\", principal: api }}]\n",
            files.display()
        ),
    )
    .unwrap();
    let mut shim = serve_secrets(dir.path(), &root, "api", &secrets);

    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let root_dir = root.dir.to_string_lossy().into_owned();
    let socket = shim.socket.to_string_lossy().into_owned();
    let dry = |config: &str, request: &str| {
        harness(&[
            "dry-run",
            "--config",
            config,
            "--request",
            request,
            "--root",
            &root_dir,
            "--shim-socket",
            &socket,
        ])
    };
    let inbound = write("inbound.yaml", "direction: inbound\n");
    let call = write(
        "call.yaml",
        "headers: { \":method\": GET, \":path\": /x, authorization: \"Bearer {token:orders}\" }\n",
    );
    let out = dry(&inbound, &call);
    assert!(out.ok().starts_with("---\nstatus: 200"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("x-ephemera-caller: spiffe://example.org/orders")
    );

    let outbound = write(
        "outbound.yaml",
        "direction: outbound\noutbound:\n  secrets:\n    - { host: api.example.com, secret: api_token, inject: { as: bearer } }\n",
    );
    let egress = write(
        "egress.yaml",
        "headers: { \":method\": GET, \":path\": /q, \":authority\": api.example.com }\n",
    );
    let out = dry(&outbound, &egress);
    assert!(
        out.ok()
            .contains("authorization: Bearer <secret api_token>")
            && out.stdout.contains("POST /v1/secrets/resolve"),
        "the real shim resolved the secret: {}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("live-secret-value"),
        "a dry run never prints a secret: {}",
        out.stdout
    );

    // With the shim gone, nothing passes.
    shim.proc.signal_and_wait("TERM");
    let out = dry(&inbound, &call);
    assert!(out.stdout.starts_with("---\nstatus: 503"), "{}", out.stdout);
}

#[test]
fn a_dry_run_prints_secrets_and_credentials_only_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let shim = write(
        "shim.yaml",
        "secret_values: { api_token: { value: s3cr3t-egress-value } }\n",
    );
    let egress = write(
        "egress.yaml",
        "direction: outbound\noutbound:\n  secrets:\n    - { host: a.example.com, secret: api_token, inject: { as: bearer } }\n    - { host: b.example.com, secret: api_token, inject: { as: basic, username: svc } }\n",
    );
    let requests = write(
        "requests.yaml",
        "- request: { headers: { \":method\": GET, \":path\": /q, \":authority\": a.example.com } }\n- request: { headers: { \":method\": GET, \":path\": /q, \":authority\": b.example.com } }\n",
    );
    let out = harness(&[
        "dry-run",
        "--config",
        &egress,
        "--request",
        &requests,
        "--shim",
        &shim,
    ]);
    let text = out.ok();
    assert!(
        text.contains("authorization: Bearer <secret api_token>")
            && text.contains("authorization: Basic base64(svc:<secret api_token>)"),
        "{text}"
    );
    assert!(!text.contains("s3cr3t-egress-value"), "{text}");

    // Minted JWT-SVIDs by subject and audience, also in a failed expectation.
    let mint = write(
        "mint.yaml",
        "direction: outbound\noutbound: { hosts: { billing: spiffe://example.org/billing } }\n",
    );
    let call = write(
        "mint-call.yaml",
        "headers: { \":method\": GET, \":path\": /i, \":authority\": billing }\nexpect: { status: 200, app_headers: { authorization: wrong } }\n",
    );
    let out = harness(&["dry-run", "--config", &mint, "--request", &call]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let shown = "<jwt sub=spiffe://example.org/api aud=spiffe://example.org/billing>";
    assert!(
        out.stdout
            .contains(&format!("authorization: Bearer {shown}"))
            && out
                .stdout
                .contains(&format!("app header authorization: \"Bearer {shown}\"")),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("Bearer eyJ"), "{}", out.stdout);

    let ipt = write(
        "ipt.yaml",
        "direction: inbound\ninbound:\n  transactions:\n    - { path: \"/objects/{key*}\", resource: \"arn:aws:s3:::b/{key}\", broker: s3, credential_headers: { secret_access_key: x-aws-secret-access-key } }\n",
    );
    let call = write(
        "call.yaml",
        "headers: { \":method\": GET, \":path\": /objects/42, authorization: \"Bearer {token:orders}\" }\n",
    );
    let out = harness(&["dry-run", "--config", &ipt, "--request", &call]);
    let text = out.ok();
    assert!(
        text.contains("x-aws-secret-access-key: <credential secret_access_key>"),
        "{text}"
    );
    assert!(!text.contains("tx-secret-"), "{text}");
}
