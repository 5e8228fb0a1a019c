//! Replicas sharing their enforcement state in a real Redis: a `jti` spent
//! at one shim is spent at every shim, a grant's budget holds across all of
//! them under concurrency, Redis down fails closed for the reads that need
//! it (and only those), and a Redis that comes back empty — or with an
//! older copy of its data, as a lagging replica promoted by a failover
//! would — is detected and lets no replay or extra use through.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ephemera_core::secrets::secrets_audience;
use ephemera_core::{Minter, PrivateKey, RustCrypto, SpiffeId};
use ephemera_tests::net::{send, wait_until};
use ephemera_tests::redis::Redis;
use ephemera_tests::tls::TestCa;
use ephemera_tests::workload::{Root, ledger_key, serve_secrets};

const PAIR: &str = "pair-secret-value";
const OPEN: &str = "open-secret-value";

/// One replica: a shim with its own ledger and the shared Redis.
struct Replica {
    socket: PathBuf,
    app_socket: PathBuf,
    ledger: PathBuf,
    proc: ephemera_tests::procs::Proc,
}

impl Replica {
    /// A replica whose secrets configuration has `state: { redis: <redis> }`.
    fn start(dir: &Path, root: &Root, files: &Path, redis: &str, key: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ledger = dir.join("secrets-audit.jsonl");
        let salt = dir.join("salt");
        std::fs::write(&salt, [7u8; 32]).unwrap();
        let config = dir.join("secrets.yaml");
        std::fs::write(
            &config,
            format!(
                r#"
stores:
  files: {{ backend: file, dir: "{files}", mount: creds }}
refs:
  pair: {{ store: files, path: pair, policy: pair }}
  open: {{ store: files, path: open, policy: plain }}
policies:
  pair: {{ allowed_principals: [orders], grant: {{ ttl_secs: 60, max_uses: 2 }} }}
  plain: {{ allowed_principals: [orders, api] }}
audit: {{ ledger: "{ledger}", tenant: acme, salt_file: "{salt}", signing_key_file: "{key}" }}
state: {{ redis: {redis} }}
"#,
                files = files.display(),
                ledger = ledger.display(),
                salt = salt.display(),
                key = key.display(),
            ),
        )
        .unwrap();
        let served = serve_secrets(dir, root, "api", &config);
        Self {
            socket: served.socket,
            app_socket: served.app_socket,
            ledger,
            proc: served.proc,
        }
    }

    /// Resolves `name` presenting `token` (none: as the workload itself).
    fn resolve(&self, name: &str, token: Option<&str>) -> (u16, String) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let to = if token.is_some() {
            &self.app_socket
        } else {
            &self.socket
        };
        let body = serde_json::json!({ "name": name }).to_string();
        let r = send(to, "POST", "/v1/secrets/resolve", &headers, &body);
        (r.status, r.body)
    }

    fn ledger_errors(&self) -> Vec<String> {
        std::fs::read_to_string(&self.ledger)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["error"].as_str().map(str::to_owned))
            .collect()
    }
}

/// Mints `orders`' JWT-SVIDs for the secrets audience of `api`, each with
/// its own `jti`.
struct Tokens {
    minter: Minter,
    audience: SpiffeId,
}

impl Tokens {
    fn new(root: &Root) -> Self {
        let pem = std::fs::read_to_string(root.dir.join("services/orders/key.pem")).unwrap();
        let key = PrivateKey::from_pkcs8_pem(&pem).unwrap();
        let orders = SpiffeId::parse("spiffe://example.org/orders").unwrap();
        let api = SpiffeId::parse("spiffe://example.org/api").unwrap();
        Self {
            minter: Minter::new(orders, key),
            audience: secrets_audience(&api).unwrap(),
        }
    }

    fn mint(&self, jti: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        self.minter
            .mint(&self.audience, now, 60, Some(jti), &RustCrypto)
            .unwrap()
    }
}

/// Identities `api` and `orders`, the secret files, and a ledger key.
fn world(dir: &Path) -> (Root, PathBuf, PathBuf) {
    let root = Root::new(&dir.join("root"), &["api", "orders"]);
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("pair"), PAIR).unwrap();
    std::fs::write(files.join("open"), OPEN).unwrap();
    (root, files, ledger_key(dir).0)
}

#[test]
fn replicas_share_replay_and_grant_state_and_fail_closed_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (root, files, key) = world(dir.path());
    let redis = Redis::start(&dir.path().join("redis"), true);
    let state = format!(r#"{{ url: "{}", timeout_ms: 300 }}"#, redis.url());
    let a = Replica::start(&dir.path().join("a"), &root, &files, &state, &key);
    let b = Replica::start(&dir.path().join("b"), &root, &files, &state, &key);
    let tokens = Tokens::new(&root);

    // A token presented to one replica is spent at the other.
    let replayed = tokens.mint("jti-replayed");
    let r = a.resolve("open", Some(&replayed));
    assert_eq!(r.0, 200, "{r:?}");
    assert!(r.1.contains(OPEN), "{r:?}");
    let r = b.resolve("open", Some(&replayed));
    assert_eq!(r.0, 403, "{r:?}");
    assert!(r.1.contains("token replayed"), "{r:?}");

    // A grant of two uses allows exactly two reads across both replicas,
    // under 64 concurrent readers split over them.
    let minted: Vec<String> = (0..64)
        .map(|i| tokens.mint(&format!("jti-pair-{i}")))
        .collect();
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let readers: Vec<_> = minted
            .iter()
            .enumerate()
            .map(|(i, token)| {
                let replica = if i % 2 == 0 { &a } else { &b };
                s.spawn(move || replica.resolve("pair", Some(token)))
            })
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let served = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(served, 2, "{statuses:?}");
    assert!(
        statuses.iter().all(|(s, _)| *s == 200 || *s == 403),
        "the rest are refused: {statuses:?}"
    );
    let spent = tokens.mint("jti-after-budget");
    assert_eq!(b.resolve("pair", Some(&spent)).0, 403);

    // Redis down: reads that need the state are not decided (503, audited
    // as such); a read that needs none is served.
    let port = redis.kill();
    let r = a.resolve("open", Some(&tokens.mint("jti-while-down")));
    assert_eq!(r.0, 503, "{r:?}");
    assert!(r.1.contains("state store unavailable"), "{r:?}");
    assert!(
        a.ledger_errors()
            .iter()
            .any(|e| e == "state store unavailable"),
        "{:?}",
        a.ledger_errors()
    );
    let r = a.resolve("open", None);
    assert_eq!(r.0, 200, "the workload's own read needs no state: {r:?}");
    assert!(r.1.contains(OPEN));

    // Redis back with its data (append-only file): service resumes by
    // itself, and what was spent stays spent.
    let redis = Redis::start_on(&dir.path().join("redis"), port, true);
    let resumed = wait_until(Duration::from_secs(10), || {
        a.resolve(
            "open",
            Some(&tokens.mint(&format!("jti-probe-{}", rand_suffix()))),
        )
        .0 == 200
    });
    assert!(resumed.is_some(), "reads resume when Redis returns");
    let r = b.resolve("open", Some(&replayed));
    assert!(r.1.contains("token replayed"), "{r:?}");
    assert_eq!(
        b.resolve("pair", Some(&tokens.mint("jti-still-spent"))).0,
        403
    );

    // Redis back empty (it forgot): detected; no replay and no extra use
    // gets through, at either replica, for the replay window plus the
    // longest grant lifetime.
    let port = redis.kill();
    let redis = Redis::start_on(&dir.path().join("redis-empty"), port, false);
    let detected = wait_until(Duration::from_secs(10), || {
        let r = b.resolve("open", Some(&replayed));
        assert_ne!(r.0, 200, "a replayed token after the loss: {r:?}");
        r.0 == 503
    });
    assert!(detected.is_some(), "the loss is detected");
    for replica in [&a, &b] {
        let r = replica.resolve("open", Some(&replayed));
        assert_eq!(r.0, 503, "{r:?}");
        let r = replica.resolve(
            "pair",
            Some(&tokens.mint(&format!("jti-x-{}", rand_suffix()))),
        );
        assert_eq!(r.0, 503, "no new grant while the state is unknown: {r:?}");
    }
    let ttl: u64 = redis.cli(&["PTTL", "ephemera:quarantine"]).parse().unwrap();
    assert!(
        ttl > 300_000 && ttl <= 360_000,
        "quarantine for the replay window (300 s) plus the longest grant (60 s): {ttl} ms"
    );
    assert_eq!(
        a.resolve("open", None).0,
        200,
        "reads needing no state go on"
    );
}

#[test]
fn a_redis_that_comes_back_with_older_data_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (root, files, key) = world(dir.path());
    let data = dir.path().join("redis");
    let redis = Redis::start(&data, false);
    let state = format!(r#"{{ url: "{}", timeout_ms: 300 }}"#, redis.url());
    let a = Replica::start(&dir.path().join("a"), &root, &files, &state, &key);
    let tokens = Tokens::new(&root);
    assert_eq!(a.resolve("pair", Some(&tokens.mint("jti-first"))).0, 200);

    // A copy of the data as it was then (what a lagging replica holds)…
    assert_eq!(redis.cli(&["SAVE"]), "OK");
    let older = dir.path().join("older.rdb");
    std::fs::copy(data.join("dump.rdb"), &older).unwrap();
    // …misses what came after: the grant's last use and a spent `jti`.
    assert_eq!(a.resolve("pair", Some(&tokens.mint("jti-second"))).0, 200);
    let spent = tokens.mint("jti-spent");
    assert_eq!(a.resolve("open", Some(&spent)).0, 200);

    // Redis returns with the older data: the epoch is there, the writes
    // are not. Neither the replay nor a third use gets through.
    let port = redis.kill();
    std::fs::copy(&older, data.join("dump.rdb")).unwrap();
    let redis = Redis::start_on(&data, port, false);
    let answers = wait_until(Duration::from_secs(10), || {
        let replay = a.resolve("open", Some(&spent));
        assert_ne!(
            replay.0, 200,
            "a replayed token after the rollback: {replay:?}"
        );
        replay.0 == 503
    });
    assert!(answers.is_some(), "the rollback is detected");
    let third = a.resolve("pair", Some(&tokens.mint("jti-third")));
    assert_eq!(third.0, 503, "no use beyond the grant's two: {third:?}");
    assert_ne!(redis.cli(&["EXISTS", "ephemera:quarantine"]), "0");
}

#[test]
fn redis_behind_tls_and_a_password_is_reached_with_the_configured_ca_and_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let (root, files, key) = world(dir.path());
    let ca = TestCa::new(dir.path(), "redis");
    let password = "redis-password-7f3a9c";
    let redis = Redis::start_tls(&dir.path().join("redis"), &ca, password);
    let right = dir.path().join("right-password");
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&right, format!("{password}\n")).unwrap();
    std::fs::write(&wrong, "not-the-redis-password\n").unwrap();
    let tokens = Tokens::new(&root);
    let state = |password: &Path, ca: Option<&Path>| {
        let ca = ca.map_or(String::new(), |ca| {
            format!(r#", ca_file: "{}""#, ca.display())
        });
        format!(
            r#"{{ url: "{}", password_file: "{}"{ca}, timeout_ms: 1000 }}"#,
            redis.url(),
            password.display()
        )
    };

    let trusted = Replica::start(
        &dir.path().join("trusted"),
        &root,
        &files,
        &state(&right, Some(&ca.cert)),
        &key,
    );
    let token = tokens.mint("jti-tls");
    assert_eq!(trusted.resolve("open", Some(&token)).0, 200);
    let r = trusted.resolve("open", Some(&token));
    assert!(
        r.1.contains("token replayed"),
        "the state is kept over TLS: {r:?}"
    );
    assert_eq!(redis.cli(&["GET", "ephemera:epoch"]).len(), 32);

    let refused = Replica::start(
        &dir.path().join("refused"),
        &root,
        &files,
        &state(&wrong, Some(&ca.cert)),
        &key,
    );
    let r = refused.resolve("open", Some(&tokens.mint("jti-wrong-password")));
    assert_eq!(r.0, 503, "a wrong password fails closed: {r:?}");
    let untrusting = Replica::start(
        &dir.path().join("untrusting"),
        &root,
        &files,
        &state(&right, None),
        &key,
    );
    let r = untrusting.resolve("open", Some(&tokens.mint("jti-untrusted")));
    assert_eq!(
        r.0, 503,
        "a server outside the system's roots fails closed: {r:?}"
    );
    for replica in [&trusted, &refused, &untrusting] {
        let said = format!("{}{}", replica.proc.stdout(), replica.proc.stderr());
        assert!(
            !said.contains(password) && !said.contains("not-the-redis-password"),
            "no password in the shim's output: {said}"
        );
    }
}

#[test]
fn a_shared_state_the_shim_cannot_set_up_stops_it_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["api"]);
    let garbage_ca = dir.path().join("ca.pem");
    std::fs::write(&garbage_ca, "not a certificate").unwrap();
    for (state, field) in [
        (
            format!(
                r#"{{ url: "redis://127.0.0.1:1", password_file: "{}" }}"#,
                dir.path().join("absent").display()
            ),
            "state.redis.password_file",
        ),
        (
            format!(
                r#"{{ url: "rediss://127.0.0.1:1", ca_file: "{}" }}"#,
                garbage_ca.display()
            ),
            "state.redis.ca_file",
        ),
        (
            r#"{ url: "redis://:pw@127.0.0.1:1" }"#.to_owned(),
            "url must not carry credentials",
        ),
    ] {
        let config = dir.path().join("secrets.yaml");
        std::fs::write(&config, format!("state: {{ redis: {state} }}\n")).unwrap();
        // A shim that starts after all is stopped after 10 s, and fails the test.
        let out = std::process::Command::new("timeout")
            .arg("10")
            .arg(ephemera_tests::ephemera_bin())
            .args(["serve", "--listen"])
            .arg(format!(
                "unix:{}",
                dir.path().join("run/shim.sock").display()
            ))
            .arg("--secrets-config")
            .arg(&config)
            .envs(root.env("api"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{state}: the shim must not start");
        assert!(stderr.contains(field), "{state}: {stderr}");
        assert!(!stderr.contains("pw@"), "no credential echoed: {stderr}");
    }
}

/// A distinct suffix for probe `jti`s.
fn rand_suffix() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
