//! The secrets enforcement point in a real shim over HTTP: callers present
//! JWT-SVIDs; grants open a window with a use budget, a replayed `jti` is
//! refused, a grant bound to one sender refuses another (binding drift), a
//! policy refusal is remembered briefly, and a ref's cache TTL keeps a value
//! in the shim. Values appear in no log and in no ledger line.

use std::time::Duration;

use ephemera_core::token::create_proof;
use ephemera_core::{PrivateKey, RustCrypto};
use ephemera_tests::net::{send, wait_until};
use ephemera_tests::spiffile_peer;
use ephemera_tests::workload::{Root, ledger_key, serve_secrets};

const ONCE: &str = "grant-once-secret-value";
const PAIR: &str = "grant-pair-secret-value";
const CACHED_V1: &str = "cached-secret-value-1";
const CACHED_V2: &str = "cached-secret-value-2";

struct Shim {
    root: Root,
    /// The Envoy listener: its caller is the workload itself.
    socket: std::path::PathBuf,
    /// The app listener: callers present JWT-SVIDs.
    app_socket: std::path::PathBuf,
    next_jti: std::cell::Cell<u32>,
}

impl Shim {
    /// A JWT-SVID from `caller` for the secrets audience of the shim's
    /// workload (`api`), living 60 s.
    fn token(&self, caller: &str, jti: &str, jkt: Option<&str>) -> String {
        let mut claims = standard_claims(caller, jti);
        if let Some(jkt) = jkt {
            claims["cnf"] = serde_json::json!({ "jkt": jkt });
        }
        self.signed(caller, &claims)
    }

    /// `claims`, signed with `caller`'s key.
    fn signed(&self, caller: &str, claims: &serde_json::Value) -> String {
        spiffile_peer(&[
            "sign-claims",
            &self.root.dir.to_string_lossy(),
            caller,
            &claims.to_string(),
        ])
        .ok()
        .to_owned()
    }

    fn fresh_jti(&self) -> String {
        let n = self.next_jti.get() + 1;
        self.next_jti.set(n);
        format!("jti-{n}")
    }

    /// Resolves `name` with `token` on the app listener (none: as the
    /// workload itself, on the Envoy listener).
    fn resolve(&self, name: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        self.resolve_for(name, token, "egress")
    }

    /// As [`Shim::resolve`], stating a purpose.
    fn resolve_for(
        &self,
        name: &str,
        token: Option<&str>,
        purpose: &str,
    ) -> (u16, serde_json::Value) {
        self.resolve_proven(name, token, purpose, None)
    }

    /// As [`Shim::resolve_for`], with a DPoP proof.
    fn resolve_proven(
        &self,
        name: &str,
        token: Option<&str>,
        purpose: &str,
        proof: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        if let Some(p) = proof {
            headers.push(("dpop", p));
        }
        let to = if token.is_some() {
            &self.app_socket
        } else {
            &self.socket
        };
        let r = send(
            to,
            "POST",
            "/v1/secrets/resolve",
            &headers,
            &serde_json::json!({ "name": name, "purpose": purpose }).to_string(),
        );
        let body = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
        (r.status, body)
    }

    fn as_orders(&self, name: &str) -> (u16, serde_json::Value) {
        let token = self.token("orders", &self.fresh_jti(), None);
        self.resolve(name, Some(&token))
    }

    /// As `orders` with a token bound to `bound` (`cnf.jkt`), proven by a
    /// DPoP proof signed with `signer`.
    fn as_orders_bound(
        &self,
        name: &str,
        bound: &PrivateKey,
        signer: Option<&PrivateKey>,
    ) -> (u16, serde_json::Value) {
        let jkt = bound.public_key().jwk().thumbprint();
        let token = self.token("orders", &self.fresh_jti(), Some(&jkt));
        let proof = signer.map(|key| {
            create_proof(
                key,
                "POST",
                "http://localhost/v1/secrets/resolve",
                &token,
                unix_now(),
                &self.fresh_jti(),
                &RustCrypto,
            )
            .unwrap()
        });
        self.resolve_proven(name, Some(&token), "egress", proof.as_deref())
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The claims of a secrets request from `caller`, living 60 s.
fn standard_claims(caller: &str, jti: &str) -> serde_json::Value {
    let now = unix_now();
    serde_json::json!({
        "sub": format!("spiffe://example.org/{caller}"),
        "aud": "spiffe://example.org/api/ephemera-secrets",
        "iat": now,
        "exp": now + 60,
        "jti": jti,
    })
}

fn error_of(r: &(u16, serde_json::Value)) -> String {
    r.1["error"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn grants_replay_binding_and_caching_are_enforced_by_the_shim() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["api", "orders", "research"]);
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    for (name, value) in [("once", ONCE), ("pair", PAIR), ("cached", CACHED_V1)] {
        std::fs::write(files.join(name), value).unwrap();
    }
    let ledger = dir.path().join("secrets-audit.jsonl");
    let salt = dir.path().join("salt");
    std::fs::write(&salt, [7u8; 32]).unwrap();
    let config = dir.path().join("secrets.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
stores:
  files: {{ backend: file, dir: "{}", mount: creds }}
  later: {{ backend: file, dir: "{}", mount: later }}
refs:
  late: {{ store: later, path: late, policy: once }}
  once: {{ store: files, path: once, policy: once }}
  pair: {{ store: files, path: pair, policy: pair }}
  cached: {{ store: files, path: cached, policy: plain, cache_ttl_secs: 2 }}
policies:
  once: {{ allowed_principals: [orders], grant: {{ ttl_secs: 2 }} }}
  pair: {{ allowed_principals: [orders], grant: {{ ttl_secs: 60, max_uses: 2 }} }}
  plain: {{ allowed_principals: [orders, api] }}
principals:
  - {{ match: "spiffe://example.org/orders", principal: orders }}
  - {{ match: "spiffe://example.org/api", principal: api }}
  - {{ match: "spiffe://example.org/research", principal: research }}
audit: {{ ledger: "{}", tenant: acme, salt_file: "{}", signing_key_file: "{}" }}
"#,
            files.display(),
            files.join("later").display(),
            ledger.display(),
            salt.display(),
            ledger_key(dir.path()).0.display()
        ),
    )
    .unwrap();
    let served = serve_secrets(dir.path(), &root, "api", &config);
    let mut proc = served.proc;
    let shim = Shim {
        root,
        socket: served.socket,
        app_socket: served.app_socket,
        next_jti: Default::default(),
    };

    // Use budget: one read per grant window, then exhaustion.
    let r = shim.as_orders("once");
    assert_eq!((r.0, r.1["value"].as_str()), (200, Some(ONCE)));
    let r = shim.as_orders("once");
    assert_eq!(r.0, 403);
    assert!(error_of(&r).contains("grant uses exhausted"), "{r:?}");
    // TTL: once the window (and the brief denial memory) is over, a new
    // grant opens.
    let waited = wait_until(Duration::from_secs(10), || shim.as_orders("once").0 == 200)
        .expect("a new grant after the TTL");
    assert!(waited >= Duration::from_secs(1), "{waited:?}");

    // Anti-replay: a jti is good for one read, whatever the secret.
    let token = shim.token("orders", "replayed-jti", None);
    assert_eq!(shim.resolve("cached", Some(&token)).0, 200);
    let r = shim.resolve("pair", Some(&token));
    assert_eq!(r.0, 403);
    assert!(error_of(&r).contains("token replayed"), "{r:?}");

    // A purpose the policy does not name gets no grant (and no new budget).
    let token = shim.token("orders", &shim.fresh_jti(), None);
    let r = shim.resolve_for("pair", Some(&token), "backup");
    assert_eq!(r.0, 403);
    assert!(
        error_of(&r).contains("purpose \"backup\" is not granted"),
        "{r:?}"
    );

    // Sender binding: a token bound to a key (cnf.jkt) counts only with a
    // DPoP proof by that key; the grant is bound to the first sender.
    let (a, b) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    let r = shim.as_orders_bound("pair", &a, None);
    assert_eq!(r.0, 401);
    assert!(error_of(&r).contains("send a DPoP proof"), "{r:?}");
    let r = shim.as_orders_bound("pair", &a, Some(&b));
    assert_eq!(r.0, 401, "a thief without the key proves nothing");
    assert!(
        error_of(&r).contains("another key than the token's cnf"),
        "{r:?}"
    );
    assert_eq!(shim.as_orders_bound("pair", &a, Some(&a)).0, 200);
    let r = shim.as_orders_bound("pair", &b, Some(&b));
    assert_eq!(r.0, 403);
    assert!(error_of(&r).contains("binding drift"), "{r:?}");
    let r = shim.as_orders_bound("pair", &a, Some(&a));
    assert_eq!((r.0, r.1["value"].as_str()), (200, Some(PAIR)));

    // A policy refusal, then the negative cache.
    let token = shim.token("research", "r-1", None);
    let r = shim.resolve("pair", Some(&token));
    assert_eq!(r.0, 403);
    assert!(error_of(&r).contains("is not authorized"), "{r:?}");
    let token = shim.token("research", "r-2", None);
    let r = shim.resolve("pair", Some(&token));
    assert!(error_of(&r).contains("recently denied"), "{r:?}");

    // A token for another audience or a forged one is not a caller; nor
    // is a token other services send the workload (its audience is the
    // workload itself), so the workload cannot read as their sender.
    for audience in ["spiffe://example.org/elsewhere", "spiffe://example.org/api"] {
        let other = shim.root.mint("orders", audience, &["--jti"]);
        let r = shim.resolve("cached", Some(&other));
        assert_eq!(r.0, 401, "{audience}: {r:?}");
    }
    assert_eq!(shim.resolve("cached", Some("not.a.token")).0, 401);
    // Anti-replay needs a jti, kept for as long as the token lives.
    let mut claims = standard_claims("orders", "unused");
    claims.as_object_mut().unwrap().remove("jti");
    let r = shim.resolve("cached", Some(&shim.signed("orders", &claims)));
    assert_eq!(r.0, 401);
    assert!(error_of(&r).contains("needs a jti"), "{r:?}");
    let mut claims = standard_claims("orders", "long-lived");
    claims["exp"] = (claims["iat"].as_u64().unwrap() + 3600).into();
    let r = shim.resolve("cached", Some(&shim.signed("orders", &claims)));
    assert_eq!(r.0, 401);
    assert!(error_of(&r).contains("may live at most 300 s"), "{r:?}");

    // A store that cannot be reached costs neither the use nor the jti.
    let token = shim.token("orders", "late-jti", None);
    let r = shim.resolve("late", Some(&token));
    assert_eq!(r.0, 503, "{r:?}");
    std::fs::create_dir_all(files.join("later")).unwrap();
    std::fs::write(files.join("later/late"), ONCE).unwrap();
    let r = shim.resolve("late", Some(&token));
    assert_eq!((r.0, r.1["value"].as_str()), (200, Some(ONCE)), "{r:?}");
    let r = shim.as_orders("late");
    assert!(error_of(&r).contains("grant uses exhausted"), "{r:?}");

    // The ref's cache TTL keeps the value in the shim: a changed file is
    // seen only after it lapses.
    let r = shim.resolve("cached", None);
    assert_eq!(r.1["value"].as_str(), Some(CACHED_V1), "{r:?}");
    std::fs::write(files.join("cached"), CACHED_V2).unwrap();
    assert_eq!(
        shim.resolve("cached", None).1["value"].as_str(),
        Some(CACHED_V1),
        "served from the shim's cache"
    );
    wait_until(Duration::from_secs(5), || {
        shim.resolve("cached", None).1["value"].as_str() == Some(CACHED_V2)
    })
    .expect("re-read after the cache TTL");

    // Every decision is audited; no value and no secret location in the
    // ledger or the shim's output.
    let text = std::fs::read_to_string(&ledger).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refused = events
        .iter()
        .filter(|e| {
            e["event"] == "deny"
                && e["error"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("refused:"))
        })
        .count();
    assert!(
        refused >= 4,
        "grant refusals are audited as denials: {text}"
    );
    proc.signal_and_wait("TERM");
    let output = format!("{}{}", proc.stdout(), proc.stderr());
    for value in [ONCE, PAIR, CACHED_V1, CACHED_V2] {
        assert!(!text.contains(value), "{value} in the ledger");
        assert!(!output.contains(value), "{value} in the shim's output");
    }
    assert!(!text.contains("creds/"), "secret locations only as HMACs");
    assert!(
        events.iter().any(|e| e["error"] == "store unavailable")
            && !text.contains(&*files.to_string_lossy()),
        "a store failure is audited by its kind, without the store's paths: {text}"
    );
}
