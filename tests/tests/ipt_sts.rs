//! The STS broker against moto with IAM checks on (signatures, trust and
//! user policies): signed AssumeRole, clear errors, no revocation recorded
//! as the TTL backstop. moto ignores session policies: their exact JSON is
//! pinned in the broker's unit tests.

use std::process::Command;
use std::time::Duration;

use ephemera_tests::moto::Moto;
use ephemera_tests::net::{CountingProxy, free_port, get, get_h2, send, wait_until};
use ephemera_tests::procs::Proc;
use ephemera_tests::tls::{TestCa, TlsFront, untrusted_certificate};
use ephemera_tests::workload::{Root, ledger_key};
use ephemera_tests::{ephemera_bin, python, run};
use serde_json::{Value, json};

const BILLING: &str = "spiffe://example.org/billing";

fn shim(
    dir: &std::path::Path,
    root: &Root,
    moto: &Moto,
    secret: &str,
) -> (std::path::PathBuf, Proc, std::path::PathBuf) {
    shim_with(dir, root, moto, secret, &[])
}

/// A shim with the `aws` and `nope` brokers plus `extra` ones (name, the
/// broker's flow-mapping fields), each allowed for `orders`.
fn shim_with(
    dir: &std::path::Path,
    root: &Root,
    moto: &Moto,
    secret: &str,
    extra: &[(&str, String)],
) -> (std::path::PathBuf, Proc, std::path::PathBuf) {
    let ledger = dir.join(format!("ledger-{}.jsonl", free_port()));
    let mut config = format!(
        "ledger: {{ path: \"{}\", signing_key_file: \"{}\" }}\nbrokers:\n  aws: {{ kind: sts, endpoint: \"http://127.0.0.1:{}\", role_arn: \"{}\" }}\n  nope: {{ kind: sts, endpoint: \"http://127.0.0.1:{}\", role_arn: \"arn:aws:iam::123456789012:role/does-not-exist\" }}\npolicy:\n  - {{ callers: [\"spiffe://example.org/orders\"], resources: [\"arn:aws:s3:::reports/*\"], actions: [read], broker: aws }}\n  - {{ callers: [\"spiffe://example.org/orders\"], resources: [\"arn:aws:s3:::reports/*\"], actions: [read], broker: nope }}\n",
        ledger.display(),
        ledger_key(dir).0.display(),
        moto.port,
        moto.keys["role_arn"].as_str().unwrap(),
        moto.port
    );
    for (name, fields) in extra {
        config = config.replacen(
            "policy:\n",
            &format!("  {name}: {{ kind: sts, role_arn: \"{}\", {fields} }}\npolicy:\n  - {{ callers: [\"spiffe://example.org/orders\"], resources: [\"arn:aws:s3:::reports/*\"], actions: [read], broker: {name} }}\n", moto.keys["role_arn"].as_str().unwrap()),
            1,
        );
    }
    let path = dir.join(format!("ipt-{}.yaml", free_port()));
    std::fs::write(&path, config).unwrap();
    let port = free_port();
    let socket = dir.join(format!("run-{port}/shim.sock"));
    let proc = Proc::spawn(
        &format!("shim-{port}"),
        dir,
        Command::new(ephemera_bin())
            .arg("serve")
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--ipt-config")
            .arg(&path)
            .envs(root.env("billing"))
            .env(
                "AWS_ACCESS_KEY_ID",
                moto.keys["access_key_id"].as_str().unwrap(),
            )
            .env("AWS_SECRET_ACCESS_KEY", secret),
    );
    wait_until(Duration::from_secs(10), || {
        get(&socket, "/healthz", &[]).status == 200
    })
    .expect("shim up");
    (socket, proc, ledger)
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn open(shim: &std::path::Path, n: u8, token: &str, broker: &str) -> (u16, Value) {
    let body = json!({"transaction_id": format!("6a1f0c2e-1b3d-4c5e-9f70-8192a3b4c5{n:02x}"), "token": token,
        "resource": "arn:aws:s3:::reports/2026/q3.csv", "action": "read", "broker": broker});
    let r = send(shim, "POST", "/v1/transactions", &[JSON], &body.to_string());
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

#[test]
fn a_signed_assume_role_yields_credentials_and_records_the_ttl_backstop() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let moto = Moto::start(dir.path());
    let (socket, proc, ledger) = shim(
        dir.path(),
        &root,
        &moto,
        moto.keys["secret_access_key"].as_str().unwrap(),
    );
    let caller = root.mint("orders", BILLING, &[]);
    let (status, opened) = open(&socket, 1, &caller, "aws");
    assert_eq!(status, 200, "{opened}");
    let cred = &opened["credential"];
    assert!(
        cred["access_key_id"].as_str().unwrap().starts_with("ASIA"),
        "{opened}"
    );
    assert!(opened["expires_at"].as_u64().unwrap() >= ephemera_shim_now() + 890);
    assert!(
        opened["blast_radius"]
            .as_str()
            .unwrap()
            .contains("single S3 object arn:aws:s3:::reports/2026/q3.csv, s3:GetObject")
    );

    // The credentials are real: moto knows the assumed-role session.
    let who = run(Command::new(python()).args(["-c", &format!(
        "import boto3; print(boto3.client('sts', endpoint_url='http://127.0.0.1:{}', region_name='us-east-1', aws_access_key_id='{}', aws_secret_access_key='{}', aws_session_token='{}').get_caller_identity()['Arn'])",
        moto.port, cred["access_key_id"].as_str().unwrap(), cred["secret_access_key"].as_str().unwrap(), cred["session_token"].as_str().unwrap())]));
    assert!(
        who.ok().contains(
            "assumed-role/ephemera-objects/ephemera-6a1f0c2e-1b3d-4c5e-9f70-8192a3b4c501"
        ),
        "{}",
        who.stdout
    );

    let r = send(
        &socket,
        "POST",
        "/v1/transactions/6a1f0c2e-1b3d-4c5e-9f70-8192a3b4c501/close",
        &[JSON],
        r#"{"outcome":{"kind":"responded","status":200}}"#,
    );
    assert_eq!(r.status, 204);
    let records: Vec<Value> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r["revocation"], "none, ttl backstop");
    }
    assert_eq!(records[1]["event"], "close");
    let ledger_text = std::fs::read_to_string(&ledger).unwrap();
    for secret in ["access_key_id", "secret_access_key", "session_token"] {
        let value = cred[secret].as_str().unwrap();
        assert!(
            !ledger_text.contains(value) && !proc.stderr().contains(value),
            "{secret} leaked"
        );
    }
    assert!(
        !proc
            .stderr()
            .contains(moto.keys["secret_access_key"].as_str().unwrap())
    );
}

#[test]
fn an_unknown_role_or_bad_credentials_give_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let moto = Moto::start(dir.path());
    let caller = root.mint("orders", BILLING, &[]);

    let (socket, _proc, _) = shim(
        dir.path(),
        &root,
        &moto,
        moto.keys["secret_access_key"].as_str().unwrap(),
    );
    let (status, body) = open(&socket, 2, &caller, "nope");
    assert_eq!(status, 503);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("nope: provider refused"), "{message}");

    let (socket, _proc2, _) = shim(dir.path(), &root, &moto, "not-the-secret");
    let (status, body) = open(&socket, 3, &caller, "aws");
    assert_eq!(status, 503);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("provider refused (403)") && message.contains("Signature"),
        "{message}"
    );
    assert!(!message.contains("not-the-secret"));
}

fn ephemera_shim_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn through_envoy_the_app_receives_the_sts_credentials_for_its_one_object() {
    use ephemera_tests::workload::{EchoApp, envoy_for_shim, serve_env, shim_socket};
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let moto = Moto::start(dir.path());
    let ledger = dir.path().join("ledger.jsonl");
    let ipt = dir.path().join("ipt.yaml");
    std::fs::write(
        &ipt,
        format!(
            "ledger: {{ path: \"{}\", signing_key_file: \"{}\" }}\nbrokers:\n  aws: {{ kind: sts, endpoint: \"http://127.0.0.1:{}\", role_arn: \"{}\" }}\npolicy:\n  - {{ callers: [\"spiffe://example.org/orders\"], resources: [\"arn:aws:s3:::reports/*\"], actions: [read, write], broker: aws }}\n",
            ledger.display(),
            ledger_key(dir.path()).0.display(),
            moto.port,
            moto.keys["role_arn"].as_str().unwrap()
        ),
    )
    .unwrap();
    let ipt_arg = ipt.display().to_string();
    let _shim = serve_env(
        dir.path(),
        &root,
        "billing",
        "shim",
        &["--ipt-config", &ipt_arg],
        &[
            (
                "AWS_ACCESS_KEY_ID",
                moto.keys["access_key_id"].as_str().unwrap(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY",
                moto.keys["secret_access_key"].as_str().unwrap(),
            ),
        ],
    );
    let app = EchoApp::start(dir.path(), "app", 200);
    let filter = "inbound:\n  transactions:\n    - path: /objects/{bucket}/{key*}\n      resource: \"arn:aws:s3:::{bucket}/{key}\"\n      broker: aws\n      credential_headers: { access_key_id: x-aws-access-key-id, secret_access_key: x-aws-secret-access-key, session_token: x-aws-session-token }\n";
    let (_envoy, inbound, _) =
        envoy_for_shim(dir.path(), app.port, &shim_socket(dir.path()), Some(filter));
    let caller = root.mint("orders", BILLING, &[]);
    let auth = format!("Bearer {caller}");
    // An app that reflects the headers it is given: the credentials come
    // back in its response and are stripped before the client, over
    // HTTP/1.1 and HTTP/2.
    let reflect = [
        ("authorization", auth.as_str()),
        (
            "x-echo-reflect",
            "x-aws-access-key-id,x-aws-secret-access-key,x-aws-session-token,x-probe",
        ),
        ("x-probe", "reflected"),
    ];
    for (version, r) in [
        ("HTTP/1.1", get(inbound, "/objects/reports/x.csv", &reflect)),
        (
            "HTTP/2",
            get_h2(inbound, "/objects/reports/x.csv", &reflect),
        ),
    ] {
        assert_eq!(r.status, 200, "{version}: {}", r.body);
        assert_eq!(
            r.headers.get("x-probe").map(String::as_str),
            Some("reflected"),
            "{version}"
        );
        for name in [
            "x-aws-access-key-id",
            "x-aws-secret-access-key",
            "x-aws-session-token",
        ] {
            assert!(r.json()["headers"][name].is_string(), "{version}: {name}");
            assert!(
                !r.headers.contains_key(name),
                "{version}: {name} reached the client"
            );
        }
    }
    let r = get(
        inbound,
        "/objects/reports/2026/q3.csv",
        &[("authorization", &auth)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert!(
        seen["headers"]["x-aws-access-key-id"]
            .as_str()
            .unwrap()
            .starts_with("ASIA")
    );
    assert!(seen["headers"]["x-aws-session-token"].is_string());
    assert!(!r.headers.contains_key("x-aws-secret-access-key"));
    let records: Vec<Value> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let opened = |resource: &str| {
        records
            .iter()
            .find(|r| r["event"] == "open" && r["resource"] == resource)
            .cloned()
            .unwrap_or_else(|| panic!("no open of {resource}: {records:?}"))
    };
    let record = opened("arn:aws:s3:::reports/2026/q3.csv");
    assert_eq!(record["action"], "read");
    assert_eq!(record["revocation"], "none, ttl backstop");
}

#[test]
fn sts_over_https_trusts_its_ca_file_and_names_a_certificate_it_cannot_trust() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let moto = Moto::start(dir.path());
    let ca = TestCa::new(dir.path(), "ca");
    let stranger = TestCa::new(dir.path(), "stranger");
    let front = TlsFront::start(dir.path(), &ca, moto.port);
    let endpoint = format!("https://127.0.0.1:{}", front.port);
    let (socket, _proc, _) = shim_with(
        dir.path(),
        &root,
        &moto,
        moto.keys["secret_access_key"].as_str().unwrap(),
        &[
            (
                "tls",
                format!(
                    "endpoint: \"{endpoint}\", ca_file: \"{}\"",
                    ca.cert.display()
                ),
            ),
            (
                "stranger",
                format!(
                    "endpoint: \"{endpoint}\", ca_file: \"{}\"",
                    stranger.cert.display()
                ),
            ),
            ("platform", format!("endpoint: \"{endpoint}\"")),
        ],
    );
    let caller = root.mint("orders", BILLING, &[]);

    // Through TLS, signed for the TLS host: moto issues the session.
    let (status, opened) = open(&socket, 4, &caller, "tls");
    assert_eq!(status, 200, "{opened}");
    assert!(
        opened["credential"]["access_key_id"]
            .as_str()
            .unwrap()
            .starts_with("ASIA"),
        "{opened}"
    );

    // Another CA, or the platform's roots: no request, a named reason.
    for (n, broker) in [(5, "stranger"), (6, "platform")] {
        let (status, body) = open(&socket, n, &caller, broker);
        assert_eq!(status, 503, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(untrusted_certificate(message, broker), "{message}");
    }
}

#[test]
fn assume_role_carries_the_session_policy_and_external_id_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let moto = Moto::start(dir.path());
    // moto ignores both parameters: read them where they leave the shim.
    let wire = CountingProxy::start(moto.port);
    let (socket, _proc, _) = shim_with(
        dir.path(),
        &root,
        &moto,
        moto.keys["secret_access_key"].as_str().unwrap(),
        &[(
            "wired",
            format!(
                "endpoint: \"http://127.0.0.1:{}\", external_id: \"ext-4711\"",
                wire.port
            ),
        )],
    );
    let caller = root.mint("orders", BILLING, &[]);
    let (status, opened) = open(&socket, 7, &caller, "wired");
    assert_eq!(status, 200, "{opened}");
    let sent = wire.sent();
    let form = sent.rsplit("\r\n\r\n").next().unwrap_or_default();
    let fields: std::collections::BTreeMap<String, String> =
        form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        fields.get("ExternalId").map(String::as_str),
        Some("ext-4711")
    );
    let policy: Value = serde_json::from_str(&fields["Policy"]).unwrap();
    assert_eq!(
        policy,
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::reports/2026/q3.csv"]}]})
    );
    assert!(
        fields["RoleSessionName"].starts_with("ephemera-6a1f0c2e-"),
        "{fields:?}"
    );
    assert!(
        sent.to_ascii_lowercase()
            .contains("authorization: aws4-hmac-sha256"),
        "signed with SigV4"
    );
}
