//! Identity-Per-Transaction in the shim against a real OpenBao: one path,
//! one capability, revoked at close, reaped at expiry, every event in the
//! hash-chained ledger, no credential anywhere it should not be.

use std::process::Command;
use std::time::Duration;

use ephemera_tests::net::{get, send, wait_until};
use ephemera_tests::openbao::OpenBao;
use ephemera_tests::procs::Proc;
use ephemera_tests::tls::{TestCa, TlsFront, untrusted_certificate};
use ephemera_tests::workload::{Root, ledger_key, verify_ledger};
use ephemera_tests::{ephemera, ephemera_bin};
use serde_json::{Value, json};

const BILLING: &str = "spiffe://example.org/billing";

struct Shim {
    socket: std::path::PathBuf,
    proc: Proc,
    ledger: std::path::PathBuf,
}

fn shim(dir: &std::path::Path, root: &Root, bao: &OpenBao, ttl: u64) -> Shim {
    shim_with(dir, root, bao, ttl, &[], "")
}

/// A shim with the `vault` broker plus `extra` OpenBao brokers (name, the
/// broker's flow-mapping fields besides kind and token), each allowed to
/// `orders` for `secret/data/orders/*`; `ledger_extra` adds fields to the
/// ledger's.
fn shim_with(
    dir: &std::path::Path,
    root: &Root,
    bao: &OpenBao,
    ttl: u64,
    extra: &[(&str, String)],
    ledger_extra: &str,
) -> Shim {
    let ledger = dir.join("ledger.jsonl");
    let hmac_key = dir.join("ledger-hmac.key");
    std::fs::write(&hmac_key, [7u8; 32]).unwrap();
    let token = bao.shim_token_file.display();
    let mut brokers = format!(
        "  vault: {{ kind: openbao, address: \"http://127.0.0.1:{}\", token_file: \"{token}\", ttl_secs: {ttl}, num_uses: 10 }}\n",
        bao.port
    );
    let mut policy = String::new();
    for (name, fields) in [("vault", String::new())].iter().chain(extra) {
        if !fields.is_empty() {
            brokers.push_str(&format!(
                "  {name}: {{ kind: openbao, token_file: \"{token}\", {fields} }}\n"
            ));
        }
        policy.push_str(&format!(
            "  - {{ callers: [\"spiffe://example.org/orders\"], resources: [\"secret/data/orders/*\"], actions: [read], broker: {name} }}\n"
        ));
    }
    let config = format!(
        "ledger: {{ path: \"{}\", hmac_key_file: \"{}\", signing_key_file: \"{}\"{ledger_extra} }}\nreap_interval_ms: 200\nbrokers:\n{brokers}policy:\n{policy}",
        ledger.display(),
        hmac_key.display(),
        ledger_key(dir).0.display(),
    );
    let path = dir.join("ipt.yaml");
    std::fs::write(&path, config).unwrap();
    let socket = dir.join("run/shim.sock");
    let proc = Proc::spawn(
        "shim",
        dir,
        Command::new(ephemera_bin())
            .arg("serve")
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--ipt-config")
            .arg(&path)
            .envs(root.env("billing")),
    );
    wait_until(Duration::from_secs(10), || {
        get(&socket, "/healthz", &[]).status == 200
    })
    .expect("shim up");
    Shim {
        socket,
        proc,
        ledger,
    }
}

fn txid(n: u8) -> String {
    format!("3f2b8c1e-9d4a-4b7e-8f10-2a3b4c5d6e{n:02x}")
}

fn open(shim: &Shim, id: &str, token: &str, resource: &str) -> (u16, Value) {
    open_on(shim, "vault", id, token, resource)
}

/// Opens a read of `resource` through `broker`.
fn open_on(shim: &Shim, broker: &str, id: &str, token: &str, resource: &str) -> (u16, Value) {
    let body = json!({"transaction_id": id, "token": token, "resource": resource, "action": "read", "broker": broker});
    let r = send(
        &shim.socket,
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

fn close(shim: &Shim, id: &str, outcome: Value) -> u16 {
    send(
        &shim.socket,
        "POST",
        &format!("/v1/transactions/{id}/close"),
        &[("content-type", "application/json")],
        &json!({"outcome": outcome}).to_string(),
    )
    .status
}

fn ledger_events(shim: &Shim) -> Vec<Value> {
    std::fs::read_to_string(&shim.ledger)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn setup() -> (tempfile::TempDir, Root, OpenBao) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing", "ci"]);
    let bao = OpenBao::start(dir.path());
    bao.root(
        "POST",
        "secret/data/orders/a",
        r#"{"data":{"v":"alpha-secret-value"}}"#,
    )
    .ok();
    bao.root(
        "POST",
        "secret/data/orders/b",
        r#"{"data":{"v":"beta-secret-value"}}"#,
    )
    .ok();
    (dir, root, bao)
}

#[test]
fn a_transaction_token_reads_its_one_path_and_dies_at_close() {
    let (dir, root, bao) = setup();
    let shim = shim(dir.path(), &root, &bao, 60);
    let caller = root.mint("orders", BILLING, &[]);
    let (status, opened) = open(&shim, &txid(1), &caller, "secret/data/orders/a");
    assert_eq!(status, 200, "{opened}");
    let token = opened["credential"]["token"].as_str().unwrap().to_owned();
    assert!(
        opened["blast_radius"]
            .as_str()
            .unwrap()
            .contains("single OpenBao path secret/data/orders/a")
    );

    let read = bao.with_token(&token, "GET", "secret/data/orders/a", "").0;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["data"]["data"]["v"], "alpha-secret-value");
    assert_eq!(
        bao.with_token(&token, "GET", "secret/data/orders/b", "")
            .0
            .status,
        403,
        "no sibling"
    );
    assert_eq!(
        bao.with_token(&token, "POST", "secret/data/orders/a", r#"{"data":{}}"#)
            .0
            .status,
        403,
        "no write"
    );

    // Three uses spent of ten: the token is alive until the close.
    assert!(
        bao.token_exists(&token),
        "alive while the transaction is open"
    );
    assert_eq!(
        close(&shim, &txid(1), json!({"kind": "responded", "status": 200})),
        204
    );
    assert!(!bao.token_exists(&token), "revoked at close");
    assert_eq!(
        bao.with_token(&token, "GET", "secret/data/orders/a", "")
            .0
            .status,
        403,
        "a thief holding it reads nothing"
    );
    assert_eq!(
        bao.root("GET", &format!("sys/policies/acl/ephemera-{}", txid(1)), "")
            .0
            .status,
        404,
        "policy deleted"
    );

    let events = ledger_events(&shim);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["open", "close"], "{events:?}");
    assert_eq!(events[1]["caller"], "spiffe://example.org/orders");
    assert!(events[1]["duration_ms"].is_u64());
    let reference = events[0]["refs"]["caller_token"].as_str().unwrap();
    assert!(
        reference.starts_with("hmac-sha256:"),
        "the caller token as an HMAC reference"
    );
    assert_eq!(events[1]["refs"]["caller_token"].as_str(), Some(reference));
    let verify = verify_ledger(dir.path(), &shim.ledger);
    assert!(verify.ok().starts_with("ok: 2 records"));

    // No credential or caller token in the ledger or the shim's output.
    let ledger_text = std::fs::read_to_string(&shim.ledger).unwrap();
    for secret in [
        token.as_str(),
        caller.as_str(),
        "alpha-secret-value",
        bao.shim_token.as_str(),
    ] {
        assert!(!ledger_text.contains(secret), "secret in ledger");
        assert!(
            !shim.proc.stderr().contains(secret) && !shim.proc.stdout().contains(secret),
            "secret in shim log"
        );
    }
}

#[test]
fn failures_revoke_too_and_are_recorded_as_fail() {
    let (dir, root, bao) = setup();
    let shim = shim(dir.path(), &root, &bao, 60);
    let caller = root.mint("orders", BILLING, &[]);
    for (n, outcome) in [
        (2u8, json!({"kind": "responded", "status": 500})),
        (3, json!({"kind": "aborted"})),
    ] {
        let (status, opened) = open(&shim, &txid(n), &caller, "secret/data/orders/a");
        assert_eq!(status, 200);
        let token = opened["credential"]["token"].as_str().unwrap().to_owned();
        assert_eq!(close(&shim, &txid(n), outcome), 204);
        assert!(!bao.token_exists(&token), "revoked after {n}");
    }
    let kinds: Vec<String> = ledger_events(&shim)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["open", "fail", "open", "fail"]);
}

#[test]
fn denials_and_bad_tokens_never_reach_openbao() {
    let (dir, root, bao) = setup();
    let shim = shim(dir.path(), &root, &bao, 60);
    let ci = root.mint("ci", BILLING, &[]);
    let orders = root.mint("orders", BILLING, &[]);
    let policies_before =
        bao.root("LIST", "sys/policies/acl", "").ok().json()["data"]["keys"].clone();

    assert_eq!(
        open(&shim, &txid(4), &ci, "secret/data/orders/a").0,
        403,
        "caller not in policy"
    );
    assert_eq!(
        open(&shim, &txid(5), &orders, "secret/data/billing/a").0,
        403,
        "resource not in policy"
    );
    assert_eq!(
        open(&shim, &txid(6), "garbage", "secret/data/orders/a").0,
        401
    );
    let wrong_aud = root.mint("orders", "spiffe://example.org/other", &[]);
    assert_eq!(
        open(&shim, &txid(7), &wrong_aud, "secret/data/orders/a").0,
        401
    );
    assert_eq!(
        open(&shim, "not-a-uuid", &orders, "secret/data/orders/a").0,
        400
    );
    assert_eq!(
        open(&shim, &txid(8), &orders, "secret/data/orders/*").0,
        400,
        "wildcards are not resources"
    );

    let policies_after =
        bao.root("LIST", "sys/policies/acl", "").ok().json()["data"]["keys"].clone();
    assert_eq!(
        policies_before, policies_after,
        "nothing was created in OpenBao"
    );
    let kinds: Vec<String> = ledger_events(&shim)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["deny", "deny"]);
}

#[test]
fn unclosed_transactions_are_reaped_when_their_credential_expires() {
    let (dir, root, bao) = setup();
    let shim = shim(dir.path(), &root, &bao, 2);
    let caller = root.mint("orders", BILLING, &[]);
    let (status, opened) = open(&shim, &txid(9), &caller, "secret/data/orders/a");
    assert_eq!(status, 200);
    let token = opened["credential"]["token"].as_str().unwrap().to_owned();
    let reaped = wait_until(Duration::from_secs(10), || {
        ledger_events(&shim).iter().any(|e| e["event"] == "expire")
    });
    assert!(reaped.is_some(), "reaped");
    assert!(!bao.token_exists(&token));
    // OpenBao drops the expired token itself; the policy only the reaper
    // deletes.
    assert_eq!(
        bao.root("GET", &format!("sys/policies/acl/ephemera-{}", txid(9)), "")
            .0
            .status,
        404,
        "the reaper deleted the transaction's policy"
    );
    assert_eq!(
        close(&shim, &txid(9), json!({"kind": "aborted"})),
        404,
        "already reaped"
    );
}

#[test]
fn an_issued_token_unlike_the_request_is_revoked_and_recorded_as_fail() {
    let (dir, root, bao) = setup();
    // A role that caps the lifetime below the request: OpenBao issues the
    // token with a warning, which the shim must not accept.
    bao.root("POST", "auth/token/roles/ephemera", r#"{"allowed_policies_glob":["ephemera-*"],"orphan":true,"renewable":false,"token_no_default_policy":true,"token_explicit_max_ttl":"10s"}"#).ok();
    let shim = shim(dir.path(), &root, &bao, 60);
    let before = bao.token_count();
    let caller = root.mint("orders", BILLING, &[]);
    let (status, body) = open(&shim, &txid(15), &caller, "secret/data/orders/a");
    assert_eq!(status, 503, "{body}");
    assert!(body.get("credential").is_none());
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not match the request"),
        "{body}"
    );
    assert_eq!(bao.token_count(), before, "the issued token was revoked");
    assert_eq!(
        bao.root(
            "GET",
            &format!("sys/policies/acl/ephemera-{}", txid(15)),
            ""
        )
        .0
        .status,
        404,
        "its policy was deleted"
    );
    let events = ledger_events(&shim);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "fail");
}

#[test]
fn openbao_down_means_503_and_a_fail_record() {
    let (dir, root, mut bao) = setup();
    let shim = shim(dir.path(), &root, &bao, 60);
    bao.proc.signal_and_wait("KILL");
    let caller = root.mint("orders", BILLING, &[]);
    let (status, body) = open(&shim, &txid(10), &caller, "secret/data/orders/a");
    assert_eq!(status, 503, "{body}");
    assert!(body.get("credential").is_none());
    let events = ledger_events(&shim);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "fail");
    assert!(
        events[0]["error"].as_str().unwrap().contains("unreachable"),
        "{}",
        events[0]
    );
}

#[test]
fn openbao_over_https_trusts_its_ca_file_and_names_a_certificate_it_cannot_trust() {
    let (dir, root, bao) = setup();
    let ca = TestCa::new(dir.path(), "ca");
    let stranger = TestCa::new(dir.path(), "stranger");
    let front = TlsFront::start(dir.path(), &ca, bao.port);
    let address = format!("https://127.0.0.1:{}", front.port);
    let shim = shim_with(
        dir.path(),
        &root,
        &bao,
        60,
        &[
            (
                "tls",
                format!("address: \"{address}\", ca_file: \"{}\"", ca.cert.display()),
            ),
            (
                "stranger",
                format!(
                    "address: \"{address}\", ca_file: \"{}\"",
                    stranger.cert.display()
                ),
            ),
            ("platform", format!("address: \"{address}\"")),
            // Plain HTTP to a TLS port is no fallback: it fails too.
            (
                "plain",
                format!("address: \"http://127.0.0.1:{}\"", front.port),
            ),
        ],
        "",
    );
    let caller = root.mint("orders", BILLING, &[]);
    let open_on =
        |n: u8, broker: &str| open_on(&shim, broker, &txid(n), &caller, "secret/data/orders/a");

    // With the CA: a token issued over TLS that reads its one path.
    let (status, opened) = open_on(11, "tls");
    assert_eq!(status, 200, "{opened}");
    let token = opened["credential"]["token"].as_str().unwrap();
    assert_eq!(
        bao.with_token(token, "GET", "secret/data/orders/a", "")
            .0
            .status,
        200
    );

    // Another CA or the platform's roots: refused before any request, with
    // the certificate named as the reason.
    for (n, broker) in [(12, "stranger"), (13, "platform")] {
        let (status, body) = open_on(n, broker);
        assert_eq!(status, 503, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(untrusted_certificate(message, broker), "{message}");
    }
    let (status, body) = open_on(14, "plain");
    assert_eq!(status, 503, "{body}");
}

/// The same token with its ECDSA signature's `s` replaced by `n−s`: a
/// different string that verifies just as well.
fn high_s_twin(token: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::elliptic_curve::PrimeField as _;
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let s: [u8; 32] = raw[32..].try_into().unwrap();
    let s = p256::Scalar::from_repr(s.into()).unwrap();
    raw[32..].copy_from_slice(&(-s).to_repr());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(raw))
}

#[test]
fn a_token_and_its_high_s_twin_share_one_ledger_reference() {
    let (dir, root, bao) = setup();
    let shim = shim(dir.path(), &root, &bao, 60);
    let caller = root.mint("orders", BILLING, &[]);
    let twin = high_s_twin(&caller);
    assert_ne!(twin, caller);
    for (n, token) in [(1, &caller), (2, &twin)] {
        let (status, opened) = open(&shim, &txid(n), token, "secret/data/orders/a");
        assert_eq!(status, 200, "the twin verifies too: {opened}");
    }
    let events = ledger_events(&shim);
    let refs: Vec<&str> = events
        .iter()
        .map(|e| e["refs"]["caller_token"].as_str().unwrap())
        .collect();
    assert_eq!(refs.len(), 2);
    assert_eq!(refs[0], refs[1], "one token, one reference");
}

#[test]
fn a_ledger_cut_back_at_a_batch_boundary_fails_verify_against_its_checkpoint() {
    let (dir, root, bao) = setup();
    // The writer's checkpoint token may create keys under its folder and
    // nothing else: no read, no overwrite, no delete.
    let folder = "ephemera/checkpoints/orders";
    let token_file = dir.path().join("checkpoint-token");
    let writer_token = bao.create_only_token(folder, &token_file);
    let mut shim = shim_with(
        dir.path(),
        &root,
        &bao,
        60,
        &[],
        &format!(
            ", checkpoint: {{ address: \"http://127.0.0.1:{}\", token_file: \"{}\", path: \"{folder}\", interval_secs: 1 }}",
            bao.port,
            token_file.display()
        ),
    );
    let caller = root.mint("orders", BILLING, &[]);
    let newest_checkpoint = || bao.newest_key(folder);
    // Each record is its own batch, each signed.
    let transact = |n: u8| {
        let (status, opened) = open(&shim, &txid(n), &caller, "secret/data/orders/a");
        assert_eq!(status, 200, "{opened}");
        let outcome = json!({"kind": "responded", "status": 200});
        assert_eq!(close(&shim, &txid(n), outcome), 204);
    };

    transact(21);
    transact(22);
    wait_until(Duration::from_secs(10), || {
        newest_checkpoint().as_deref() == Some("00000000000000000004")
    })
    .expect("a checkpoint of seq 4 within the interval");
    transact(23);
    transact(24);
    // The head at shutdown is checkpointed too.
    shim.proc.signal_and_wait("TERM");
    assert_eq!(newest_checkpoint().as_deref(), Some("00000000000000000008"));

    // The writer's token can neither overwrite, delete nor read a checkpoint.
    let key = format!("secret/data/{folder}/00000000000000000008");
    let forged = json!({"data": {"seq": 6, "head": "0", "time": 0, "sig": "ed25519:00"}});
    for (method, path, body) in [
        ("POST", key.clone(), forged.to_string()),
        ("DELETE", key.clone(), String::new()),
        (
            "DELETE",
            format!("secret/metadata/{folder}/00000000000000000008"),
            String::new(),
        ),
        ("GET", key.clone(), String::new()),
    ] {
        let answer = bao.with_token(&writer_token, method, &path, &body).0;
        assert_eq!(answer.status, 403, "{method} {path}: {}", answer.body);
    }

    let newest = dir.path().join("checkpoint.json");
    std::fs::write(&newest, bao.root("GET", &key, "").ok().body).unwrap();
    let public = ledger_key(dir.path()).1;
    let ledger = shim.ledger.to_string_lossy().into_owned();
    let public = public.to_string_lossy().into_owned();
    let verify = |checkpoint: Option<&std::path::Path>| {
        let mut args = vec!["ledger", "verify", &ledger, "--public-key", &public];
        let checkpoint = checkpoint.map(|c| c.to_string_lossy().into_owned());
        if let Some(c) = &checkpoint {
            args.extend(["--checkpoint", c]);
        }
        ephemera(&args, &[])
    };
    let whole = verify(Some(&newest));
    assert!(
        whole.ok().contains("ok: 8 records") && whole.stdout.contains("checkpoint at seq 8"),
        "{}",
        whole.stdout
    );

    // Cut back two records: what is left is still a signed chain, so only
    // the checkpoint can tell.
    let text = std::fs::read_to_string(&shim.ledger).unwrap();
    let kept: String = text.lines().take(6).map(|l| format!("{l}\n")).collect();
    std::fs::write(&shim.ledger, kept).unwrap();
    let alone = verify(None);
    assert!(alone.ok().contains("ok: 6 records"), "{}", alone.stdout);
    let cut = verify(Some(&newest));
    assert_ne!(cut.code, 0);
    assert!(
        cut.stderr
            .contains("the ledger ends at seq 6, before the checkpoint at seq 8"),
        "{}",
        cut.stderr
    );
}

#[test]
fn a_token_an_agent_rotates_is_used_at_once_without_a_restart() {
    let (dir, root, bao) = setup();
    let shim = shim(dir.path(), &root, &bao, 60);
    let caller = root.mint("orders", BILLING, &[]);
    let (status, opened) = open(&shim, &txid(1), &caller, "secret/data/orders/a");
    assert_eq!(status, 200, "{opened}");

    // As Vault Agent does: a new token written beside the file and renamed
    // over it; then the old one revoked.
    let next = bao.new_shim_token();
    let staged = dir.path().join("shim-token.new");
    std::fs::write(&staged, next).unwrap();
    std::fs::rename(&staged, &bao.shim_token_file).unwrap();
    bao.root(
        "POST",
        "auth/token/revoke",
        &json!({ "token": bao.shim_token }).to_string(),
    )
    .ok();

    // The open made under the old token closes under the new one.
    assert_eq!(
        close(&shim, &txid(1), json!({"kind": "responded", "status": 200})),
        204
    );
    let caller = root.mint("orders", BILLING, &[]);
    let (status, opened) = open(&shim, &txid(2), &caller, "secret/data/orders/b");
    assert_eq!(status, 200, "the rotated token issues: {opened}");
    let token = opened["credential"]["token"].as_str().unwrap();
    assert_eq!(
        bao.with_token(token, "GET", "secret/data/orders/b", "")
            .0
            .status,
        200
    );
    let events: Vec<String> = ledger_events(&shim)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events, ["open", "close", "open"]);
    drop(shim.proc);
}
