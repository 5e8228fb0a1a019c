//! The fault matrix: one sidecar (real Envoy, the shim, OpenBao and moto
//! behind relays, the ledger on a small tmpfs) carries steady traffic while
//! each row injects one fault. Every row states what each kind of request
//! may get while its fault lasts and what must be seen at least once; after
//! the fault heals, the same invariants are checked every time:
//! - service recovers by itself;
//! - the app saw no request without its credential and its `open` record,
//!   and never a forged caller;
//! - no acknowledged ledger record was lost or changed, and the chain and
//!   its signatures verify;
//! - every OpenBao credential the app was given is now refused;
//! - at the end: no credential, token or key in any log or in the ledger.
//!
//! Faults covered elsewhere: a ledger read-only from the start and the
//! secrets audit ledger filling up (`ipt_faults`), Redis and PostgreSQL
//! stopped mid-run (`secrets_redis`, `ledger_postgres`,
//! `revocation_fanout`), the shim unreachable before the first identity
//! (`envoy_filter`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ephemera_tests::moto::Moto;
use ephemera_tests::net::{Relay, get, wait_until};
use ephemera_tests::openbao::OpenBao;
use ephemera_tests::procs::Proc;
use ephemera_tests::spiffile_peer;
use ephemera_tests::tmpfs::Tmpfs;
use ephemera_tests::workload::{
    EchoApp, Root, Shim, envoy, envoy_for_shim, ledger_key, serve_env, shim_socket, verify_ledger,
};
use serde_json::{Value, json};

const BILLING: &str = "spiffe://example.org/billing";
const ORDERS: &str = "spiffe://example.org/orders";
const FILTER: &str = "inbound:\n  transactions:\n    - { path: \"/orders/{name}\", resource: \"secret/data/orders/{name}\", broker: vault, credential_headers: { token: x-vault-token } }\n    - { path: \"/reports/{name}\", resource: \"arn:aws:s3:::reports/{name}\", broker: aws, credential_headers: { access_key_id: x-aws-access-key-id, secret_access_key: x-aws-secret-access-key, session_token: x-aws-session-token } }\n";
/// How long traffic runs into each fault.
const FAULT_WINDOW: Duration = Duration::from_millis(1500);

/// A kind of request in the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A transaction with an OpenBao credential.
    Vault,
    /// A transaction with an STS session.
    Aws,
    /// A plain authenticated request (no transaction).
    Plain,
    /// A token for another audience.
    Forged,
}

const KINDS: [Kind; 4] = [Kind::Vault, Kind::Aws, Kind::Plain, Kind::Forged];

/// What the traffic needs: where to send, and as whom.
struct Client {
    inbound: u16,
    caller: String,
    forged: String,
}

impl Client {
    /// One request of `kind`, `n`th of its row; the status (0: no answer).
    fn request(&self, kind: Kind, row: &str, n: usize, app_delay_ms: u64) -> u16 {
        let token = if kind == Kind::Forged {
            &self.forged
        } else {
            &self.caller
        };
        let path = match kind {
            Kind::Vault | Kind::Forged => format!("/orders/{row}-{n}"),
            Kind::Aws => format!("/reports/{row}-{n}"),
            Kind::Plain => format!("/plain/{row}-{n}"),
        };
        let auth = format!("Bearer {token}");
        let delay = app_delay_ms.to_string();
        get(
            self.inbound,
            &path,
            &[("authorization", &auth), ("x-echo-delay-ms", &delay)],
        )
        .status
    }
}

/// The sidecar under test and everything around it.
struct World {
    dir: PathBuf,
    root: Root,
    bao: OpenBao,
    moto: Moto,
    bao_link: Relay,
    sts_link: Relay,
    app: EchoApp,
    ledger_dir: PathBuf,
    ledger: PathBuf,
    config: PathBuf,
    shim: Shim,
    shim_runs: usize,
    envoy: Proc,
    admin: u16,
    client: Arc<Client>,
    /// Output of processes that were stopped.
    logs: Vec<String>,
    /// The ledger as last checked.
    ledger_seen: String,
    /// App requests already checked.
    app_seen: usize,
    /// Every credential value the app was given.
    credentials: BTreeSet<String>,
    /// (stashed bytes, path) of a damaged file, put back on heal.
    stashed: Option<(Vec<u8>, PathBuf)>,
    mount: Option<Tmpfs>,
}

impl World {
    fn start(dir: &Path) -> Self {
        let root = Root::new(&dir.join("root"), &["orders", "billing"]);
        let bao = OpenBao::start(dir);
        let moto = Moto::start(dir);
        let (bao_link, sts_link) = (Relay::start(bao.port), Relay::start(moto.port));
        let app = EchoApp::start(dir, "app", 200);
        let ledger_dir = dir.join("ledger");
        let mount = Tmpfs::mount(&ledger_dir, "size=4m,mode=0700")
            .inspect_err(|why| {
                eprintln!("fault matrix: no tmpfs ({why}): the ledger_full row is skipped");
            })
            .ok();
        let ledger = ledger_dir.join("ledger.jsonl");
        let config = dir.join("ipt.yaml");
        std::fs::write(
            &config,
            format!(
                "ledger: {{ path: \"{}\", signing_key_file: \"{}\" }}\nbrokers:\n  vault: {{ kind: openbao, address: \"http://127.0.0.1:{}\", token_file: \"{}\", ttl_secs: 30, timeout_ms: 800 }}\n  aws: {{ kind: sts, endpoint: \"http://127.0.0.1:{}\", role_arn: \"{}\" }}\npolicy:\n  - {{ callers: [\"{ORDERS}\"], resources: [\"secret/data/orders/*\"], actions: [read], broker: vault }}\n  - {{ callers: [\"{ORDERS}\"], resources: [\"arn:aws:s3:::reports/*\"], actions: [read], broker: aws }}\n",
                ledger.display(),
                ledger_key(dir).0.display(),
                bao_link.port,
                bao.shim_token_file.display(),
                sts_link.port,
                moto.key("role_arn"),
            ),
        )
        .unwrap();
        let shim = start_shim(dir, &root, &config, &moto, "shim-1");
        let (envoy, inbound, admin) =
            envoy_for_shim(dir, app.port, &shim_socket(dir), Some(FILTER));
        let caller = root.mint("orders", BILLING, &["--ttl", "600"]);
        let forged = root.mint("orders", "spiffe://example.org/other", &["--ttl", "600"]);
        Self {
            dir: dir.to_owned(),
            root,
            bao,
            moto,
            bao_link,
            sts_link,
            app,
            ledger_dir,
            ledger,
            config,
            shim,
            shim_runs: 1,
            envoy,
            admin,
            client: Arc::new(Client {
                inbound,
                caller,
                forged,
            }),
            logs: Vec::new(),
            ledger_seen: String::new(),
            app_seen: 0,
            credentials: BTreeSet::new(),
            stashed: None,
            mount,
        }
    }

    /// Kills the shim (SIGKILL) and starts another on the same ledger.
    fn restart_shim(&mut self) {
        self.shim.proc.signal_and_wait("KILL");
        self.logs.push(self.shim.proc.stderr());
        self.shim_runs += 1;
        let name = format!("shim-{}", self.shim_runs);
        self.shim = start_shim(&self.dir, &self.root, &self.config, &self.moto, &name);
    }

    /// Stops Envoy and starts it again on the same bootstrap with four
    /// workers (it ran with the machine's default).
    fn restart_envoy(&mut self) {
        self.envoy.signal_and_wait("TERM");
        self.logs.push(self.envoy.stderr());
        let bootstrap = self.dir.join(format!("envoy-{}.json", self.client.inbound));
        self.envoy = Proc::spawn(
            "envoy-restarted",
            &self.dir,
            Command::new(envoy()).arg("-c").arg(&bootstrap).args([
                "--disable-hot-restart",
                "--concurrency",
                "4",
                "--log-level",
                "info",
            ]),
        );
        let admin = self.admin;
        wait_until(Duration::from_secs(20), || {
            get(admin, "/ready", &[]).status == 200
        })
        .expect("envoy ready again");
    }

    /// Puts `bytes` in place of the file at `path`, keeping the original.
    fn damage(&mut self, path: PathBuf, bytes: &[u8]) {
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, bytes).unwrap();
        self.stashed = Some((good, path));
    }

    fn undamage(&mut self) {
        if let Some((good, path)) = self.stashed.take() {
            std::fs::write(path, good).unwrap();
        }
    }

    fn every_log(&self) -> Vec<String> {
        let mut logs = self.logs.clone();
        logs.extend([
            self.shim.proc.stderr(),
            self.shim.proc.stdout(),
            self.envoy.stderr(),
            self.envoy.stdout(),
        ]);
        logs
    }
}

fn start_shim(dir: &Path, root: &Root, config: &Path, moto: &Moto, name: &str) -> Shim {
    let config = config.display().to_string();
    serve_env(
        dir,
        root,
        "billing",
        name,
        &["--ipt-config", &config],
        &[
            ("AWS_ACCESS_KEY_ID", moto.key("access_key_id")),
            ("AWS_SECRET_ACCESS_KEY", moto.key("secret_access_key")),
        ],
    )
}

/// One fault.
struct Row {
    fault: &'static str,
    inject: fn(&mut World),
    heal: fn(&mut World),
    /// What each kind of request may get while the fault lasts.
    allowed: fn(Kind) -> &'static [u16],
    /// Seen at least once while the fault lasts: the fault took hold.
    shows: Option<(Kind, u16)>,
    /// How long the app holds each request (keeps transactions open).
    app_delay_ms: u64,
    /// A transaction may be left open with its credential live until its
    /// TTL: the proxy died mid-request and nobody can tell the shim.
    may_leave_open: bool,
}

/// Nothing is disturbed: every request gets its normal answer.
fn normal(kind: Kind) -> &'static [u16] {
    match kind {
        Kind::Forged => &[401],
        _ => &[200],
    }
}

/// OpenBao transactions are refused; the rest is undisturbed.
fn vault_refused(kind: Kind) -> &'static [u16] {
    match kind {
        Kind::Vault => &[503],
        other => normal(other),
    }
}

/// Transactions may be refused while the fault starts or ends.
fn transactions_may_fail(kind: Kind) -> &'static [u16] {
    match kind {
        Kind::Vault | Kind::Aws => &[200, 503],
        other => normal(other),
    }
}

fn nothing(_: &mut World) {}

/// A row's defaults: the app answers at once, and every transaction ends.
const STEADY: Row = Row {
    fault: "",
    inject: nothing,
    heal: nothing,
    allowed: normal,
    shows: None,
    app_delay_ms: 0,
    may_leave_open: false,
};

const ROWS: &[Row] = &[
    Row {
        fault: "openbao_stopped",
        inject: |w| w.bao_link.cut(),
        heal: |w| w.bao_link.restore(),
        allowed: vault_refused,
        shows: Some((Kind::Vault, 503)),
        ..STEADY
    },
    Row {
        fault: "openbao_slow",
        // Slower than the broker's 800 ms timeout.
        inject: |w| w.bao_link.slow(Duration::from_millis(1200)),
        heal: |w| w.bao_link.restore(),
        allowed: vault_refused,
        shows: Some((Kind::Vault, 503)),
        ..STEADY
    },
    Row {
        fault: "openbao_answers_500",
        inject: |w| w.bao_link.fail(),
        heal: |w| w.bao_link.restore(),
        allowed: vault_refused,
        shows: Some((Kind::Vault, 503)),
        ..STEADY
    },
    Row {
        fault: "sts_down",
        inject: |w| w.sts_link.cut(),
        heal: |w| w.sts_link.restore(),
        allowed: |kind| match kind {
            Kind::Aws => &[503],
            other => normal(other),
        },
        shows: Some((Kind::Aws, 503)),
        ..STEADY
    },
    Row {
        fault: "shim_killed_mid_transactions",
        inject: World::restart_shim,
        heal: nothing,
        allowed: |kind| match kind {
            Kind::Forged => &[401],
            _ => &[200, 503],
        },
        shows: None,
        // The app holds each request: transactions are open when the shim dies.
        app_delay_ms: 300,
        ..STEADY
    },
    Row {
        fault: "ledger_full",
        inject: |w| {
            let mut filler = std::fs::File::create(w.ledger_dir.join("filler")).unwrap();
            while filler.write_all(&[0u8; 64 * 1024]).is_ok() {}
        },
        heal: |w| std::fs::remove_file(w.ledger_dir.join("filler")).unwrap(),
        allowed: transactions_may_fail,
        shows: Some((Kind::Vault, 503)),
        ..STEADY
    },
    Row {
        fault: "bundle_replaced_by_garbage",
        inject: |w| {
            let path = w.root.dir.join("bundle.json");
            w.damage(path, b"\x00\x01garbage{");
        },
        heal: World::undamage,
        allowed: normal,
        shows: None,
        ..STEADY
    },
    Row {
        fault: "bundle_half_written",
        inject: |w| {
            let path = w.root.dir.join("bundle.json");
            let good = std::fs::read(&path).unwrap();
            w.damage(path, &good[..good.len() / 2]);
        },
        heal: World::undamage,
        allowed: normal,
        shows: None,
        ..STEADY
    },
    Row {
        fault: "key_half_written",
        inject: |w| {
            let path = w.root.dir.join("services/billing/key.pem");
            let good = std::fs::read(&path).unwrap();
            w.damage(path, &good[..good.len() / 2]);
        },
        heal: World::undamage,
        allowed: normal,
        shows: None,
        ..STEADY
    },
    Row {
        fault: "identity_directory_deleted",
        inject: |w| {
            let gone = w.root.dir.with_extension("gone");
            std::fs::rename(&w.root.dir, gone).unwrap();
        },
        heal: |w| {
            let gone = w.root.dir.with_extension("gone");
            std::fs::rename(gone, &w.root.dir).unwrap();
        },
        allowed: normal,
        shows: None,
        ..STEADY
    },
    Row {
        fault: "envoy_restarted_with_more_workers",
        inject: World::restart_envoy,
        heal: nothing,
        allowed: |kind| match kind {
            Kind::Forged => &[0, 401],
            _ => &[0, 200],
        },
        shows: None,
        may_leave_open: true,
        ..STEADY
    },
];

/// Runs traffic (three clients) and injects `row`'s fault once it is under
/// way; returns every (kind, status, whether it was sent after the fault
/// was in place) seen until the window closes.
fn traffic_through(world: &mut World, row: &Row) -> Vec<(Kind, u16, bool)> {
    let counter = Arc::new(AtomicUsize::new(0));
    let stop = Instant::now() + FAULT_WINDOW;
    let injected: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (client, counter, injected) =
                (world.client.clone(), counter.clone(), injected.clone());
            let (fault, delay) = (row.fault, row.app_delay_ms);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                // Until the window closes, and for a while into the fault
                // however long injecting it took.
                let running = || {
                    Instant::now() < stop
                        || injected
                            .get()
                            .is_none_or(|at| at.elapsed() < Duration::from_millis(700))
                };
                while running() {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let kind = KINDS[n % KINDS.len()];
                    let during = injected.get().is_some();
                    seen.push((kind, client.request(kind, fault, n, delay), during));
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    (row.inject)(world);
    let _ = injected.set(Instant::now());
    clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect()
}

impl World {
    /// Whether an OpenBao credential is harmless now: revoked, or every
    /// policy it carries deleted (asked with the root token, so the
    /// credential's own uses are not spent).
    fn harmless(&self, token: &str) -> bool {
        let body = json!({ "token": token }).to_string();
        let found = self.bao.root("POST", "auth/token/lookup", &body).0;
        if found.status != 200 {
            return true;
        }
        found.json()["data"]["policies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .all(|policy| {
                self.bao
                    .root("GET", &format!("sys/policies/acl/{policy}"), "")
                    .0
                    .status
                    == 404
            })
    }

    /// The ledger's records.
    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.ledger)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// What must hold after every fault, once it has healed.
    fn check_invariants(&mut self, fault: &str, may_leave_open: bool) {
        // Service comes back by itself.
        for kind in [Kind::Vault, Kind::Aws, Kind::Plain] {
            let mut n = 0;
            let label = format!("{fault}-recovered");
            wait_until(Duration::from_secs(15), || {
                n += 1;
                self.client.request(kind, &label, n, 0) == 200
            })
            .unwrap_or_else(|| panic!("{fault}: {kind:?} requests did not recover"));
        }
        // No acknowledged record lost or changed; chain and signatures hold.
        let text = std::fs::read_to_string(&self.ledger).unwrap();
        assert!(
            text.starts_with(&self.ledger_seen),
            "{fault}: acknowledged ledger records were lost or changed"
        );
        let verify = verify_ledger(&self.dir, &self.ledger);
        assert_eq!(verify.code, 0, "{fault}: {}", verify.stderr);
        self.ledger_seen = text;
        // Resource -> (transaction, whether it has ended).
        let mut opened: BTreeMap<String, String> = BTreeMap::new();
        let mut ended: BTreeSet<String> = BTreeSet::new();
        for r in self.records() {
            let id = r["transaction_id"].as_str().unwrap_or_default().to_owned();
            match (r["event"].as_str(), r["resource"].as_str()) {
                (Some("open"), Some(resource)) => {
                    opened.insert(resource.to_owned(), id);
                }
                (Some("close" | "fail" | "expire"), _) => {
                    ended.insert(id);
                }
                _ => {}
            }
        }
        // The app saw only the verified caller, each transaction with its
        // credential and its `open` record.
        let requests = self.app.requests();
        let mut vault = Vec::new();
        for r in &requests[self.app_seen..] {
            let path = r["path"].as_str().unwrap();
            let headers = &r["headers"];
            assert_eq!(headers["x-ephemera-caller"], ORDERS, "{fault}: {r}");
            let (resource, fields): (String, &[&str]) =
                if let Some(name) = path.strip_prefix("/orders/") {
                    (format!("secret/data/orders/{name}"), &["x-vault-token"])
                } else if let Some(name) = path.strip_prefix("/reports/") {
                    (
                        format!("arn:aws:s3:::reports/{name}"),
                        &["x-aws-secret-access-key", "x-aws-session-token"],
                    )
                } else {
                    continue;
                };
            for field in fields {
                let value = headers[*field].as_str().unwrap_or_else(|| {
                    panic!("{fault}: {path} reached the app without its {field}")
                });
                self.credentials.insert(value.to_owned());
            }
            let transaction = opened.get(&resource).unwrap_or_else(|| {
                panic!("{fault}: {path} reached the app without its open record")
            });
            if let Some(token) = headers["x-vault-token"].as_str() {
                vault.push((
                    path.to_owned(),
                    token.to_owned(),
                    ended.contains(transaction),
                ));
            }
        }
        self.app_seen = requests.len();
        // No OpenBao credential outlives its transaction (its TTL, 30 s,
        // is far off).
        for (path, token, ended) in vault {
            let harmless = wait_until(Duration::from_secs(3), || self.harmless(&token)).is_some();
            assert!(
                harmless || (may_leave_open && !ended),
                "{fault}: the credential given for {path} still works"
            );
        }
    }
}

#[test]
fn under_every_fault_nothing_unaudited_reaches_the_app_and_nothing_audited_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::start(dir.path());
    world.check_invariants("start", false);
    let mut report = BTreeMap::new();
    for row in ROWS {
        if row.fault == "ledger_full" && world.mount.is_none() {
            continue;
        }
        let seen = traffic_through(&mut world, row);
        (row.heal)(&mut world);
        let mut counts: BTreeMap<(Kind, u16), usize> = BTreeMap::new();
        for (kind, status, during) in &seen {
            // Sent before the fault was in place: either answer.
            let allowed = (row.allowed)(*kind).contains(status)
                || (!during && normal(*kind).contains(status));
            assert!(
                allowed,
                "{}: a {kind:?} request got {status}: {seen:?}",
                row.fault
            );
            if *during {
                *counts.entry((*kind, *status)).or_default() += 1;
            }
        }
        if let Some(expected) = row.shows {
            assert!(
                counts.contains_key(&expected),
                "{}: the fault did not show ({expected:?} never seen): {counts:?}",
                row.fault
            );
        }
        assert!(
            KINDS
                .iter()
                .all(|k| counts.keys().any(|(kind, _)| kind == k)),
            "{}: traffic ran: {counts:?}",
            row.fault
        );
        world.check_invariants(row.fault, row.may_leave_open);
        report.insert(row.fault, counts);
    }
    eprintln!("fault matrix: {report:#?}");

    // The shim killed mid-transaction: its successor disarmed and recorded
    // every transaction left open.
    let records = world.records();
    let orphaned: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("orphaned"))
        })
        .collect();
    assert!(
        orphaned.iter().any(|r| r["broker"] == "vault"),
        "the restarted shim disarmed the OpenBao transactions left open: {orphaned:?}"
    );
    for r in &orphaned {
        assert_eq!(r["event"], "fail", "{r}");
    }
    // Envoy restarts with four workers, and still verifies.
    let options = get(world.admin, "/server_info", &[]).json();
    assert_eq!(options["command_line_options"]["concurrency"], 4);

    // Nothing secret in any log or in the ledger.
    let key = std::fs::read_to_string(world.root.dir.join("services/billing/key.pem")).unwrap();
    let key_body = key.lines().nth(1).unwrap().to_owned();
    let mut secrets = world.credentials.clone();
    secrets.extend([
        world.client.caller.clone(),
        world.client.forged.clone(),
        key_body,
    ]);
    let mut places = world.every_log();
    places.push(std::fs::read_to_string(&world.ledger).unwrap());
    assert!(world.credentials.len() > 20, "credentials were issued");
    for secret in &secrets {
        for place in &places {
            assert!(
                !place.contains(secret.as_str()),
                "a secret leaked into a log or the ledger"
            );
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[test]
fn tokens_at_the_clock_leeway_edges_get_one_verdict_from_envoy_and_the_shim() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::start(dir.path());
    let leeway = ephemera_core::token::DEFAULT_LEEWAY_SECS as i64;
    let margin = 5;
    let r = world.root.dir.to_string_lossy().into_owned();
    let sign = |claims: Value| {
        spiffile_peer(&["sign-claims", &r, "orders", &claims.to_string()])
            .ok()
            .trim()
            .to_owned()
    };
    let t = now();
    let base =
        |exp: i64, iat: i64| json!({ "sub": ORDERS, "aud": BILLING, "exp": exp, "iat": iat });
    let cases = [
        (
            "expired, inside the leeway",
            base(t - leeway + margin, t - 300),
            200,
        ),
        (
            "expired, past the leeway",
            base(t - leeway - margin, t - 300),
            401,
        ),
        (
            "issued ahead, inside the leeway",
            base(t + 300, t + leeway - margin),
            200,
        ),
        (
            "issued ahead, past the leeway",
            base(t + 300, t + leeway + margin),
            401,
        ),
        (
            "not yet valid, inside the leeway",
            json!({ "sub": ORDERS, "aud": BILLING, "exp": t + 300, "iat": t, "nbf": t + leeway - margin }),
            200,
        ),
        (
            "not yet valid, past the leeway",
            json!({ "sub": ORDERS, "aud": BILLING, "exp": t + 300, "iat": t, "nbf": t + leeway + margin }),
            401,
        ),
    ];
    for (n, (case, claims, expected)) in cases.into_iter().enumerate() {
        let auth = format!("Bearer {}", sign(claims));
        // A transaction route: the filter verifies, then the shim again.
        let got = get(
            world.client.inbound,
            &format!("/orders/edge-{n}"),
            &[("authorization", &auth)],
        );
        assert_eq!(got.status, expected, "{case}: {}", got.body);
    }
    let opened = world
        .records()
        .iter()
        .filter(|r| r["event"] == "open")
        .count();
    assert_eq!(
        opened, 3,
        "each token inside the leeway opened its transaction"
    );
}
