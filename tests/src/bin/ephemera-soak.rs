//! The soak: two sidecars (orders calling billing) under steady mixed
//! traffic for N minutes while their identities rotate every 30 s. Prints
//! (and writes to `<dir>/report.md`) memory and descriptors over time,
//! every unexpected answer, latency per minute, and the ledgers' size and
//! verification; exits 1 unless memory stayed flat after warm-up, no
//! request got an unexpected answer, and both ledgers verify.
//!
//! `tests/soak.sh [MINUTES]` builds what it needs and runs it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ephemera_tests::net::get;
use ephemera_tests::openbao::OpenBao;
use ephemera_tests::procs::Proc;
use ephemera_tests::workload::{EchoApp, Root, Sidecar, ledger_key, verify_ledger};

const BILLING: &str = "spiffe://example.org/billing";
const SECRET: &str = "soak-egress-secret-value";
/// After a rotation, when the soak's caller starts using the new key: the
/// shims' key activation wait (2 s) and one identity re-read (2 s).
const ACTIVATION: Duration = Duration::from_secs(4);

#[derive(Parser)]
struct Args {
    /// How long traffic runs.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Requests per second of each of the five kinds.
    #[arg(long, default_value_t = 20)]
    rate: u64,
    /// Seconds between identity rotations.
    #[arg(long, default_value_t = 30)]
    rotate_secs: u64,
    /// Where processes, ledgers and the report go (default: a new directory
    /// under target/soak).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A JWT-SVID caller on a plain route.
    Valid,
    /// A token for another audience.
    Invalid,
    /// A transaction with an OpenBao credential.
    Transaction,
    /// An egress call that gets a secret injected.
    Egress,
    /// An outbound call that gets a JWT-SVID minted (to billing).
    Minted,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Valid,
        Kind::Invalid,
        Kind::Transaction,
        Kind::Egress,
        Kind::Minted,
    ];

    fn expected(self) -> u16 {
        match self {
            Kind::Invalid => 401,
            _ => 200,
        }
    }
}

/// One request: when (seconds into the run), what, the answer, how long.
#[derive(Clone, Copy)]
struct Sample {
    at: f64,
    kind: Kind,
    status: u16,
    micros: u64,
}

/// One reading of a process's memory and descriptors.
#[derive(Clone)]
struct Reading {
    at: f64,
    /// (process, RSS KiB, open descriptors)
    procs: Vec<(&'static str, u64, usize)>,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The shim (the sidecar process) and its Envoy.
fn pids(sidecar: &Sidecar) -> (u32, u32) {
    let shim = sidecar.proc.pid();
    let envoy = sidecar.proc.children().first().copied().unwrap_or(0);
    (shim, envoy)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn verify(dir: &Path, ledger: &Path) -> Result<usize, String> {
    let r = verify_ledger(dir, ledger);
    if r.code != 0 {
        return Err(r.stderr);
    }
    Ok(std::fs::read_to_string(ledger)
        .map(|t| t.lines().count())
        .unwrap_or(0))
}

struct World {
    _bao: OpenBao,
    root: Root,
    billing: Sidecar,
    orders: Sidecar,
    _apps: Vec<EchoApp>,
    ipt_ledger: PathBuf,
    audit_ledger: PathBuf,
    dir: PathBuf,
}

fn start(dir: &Path) -> World {
    let root = Root::new(&dir.join("root"), &["orders", "billing"]);
    let bao = OpenBao::start(dir);
    let private = ledger_key(dir).0;

    let ipt_ledger = dir.join("ipt-ledger.jsonl");
    let ipt = dir.join("ipt.yaml");
    std::fs::write(
        &ipt,
        format!(
            "ledger: {{ path: \"{}\", signing_key_file: \"{}\" }}\nbrokers:\n  vault: {{ kind: openbao, address: \"http://127.0.0.1:{}\", token_file: \"{}\", ttl_secs: 30 }}\npolicy:\n  - {{ callers: [\"spiffe://example.org/orders\"], resources: [\"secret/data/orders/*\"], actions: [read], broker: vault }}\n",
            ipt_ledger.display(),
            private.display(),
            bao.port,
            bao.shim_token_file.display()
        ),
    )
    .unwrap();
    let billing_app = EchoApp::start(dir, "billing-app", 200);
    let billing = Sidecar::start_with(
        dir,
        &root,
        "billing",
        billing_app.port,
        Some(
            "inbound:\n  transactions:\n    - { path: \"/orders/{name}\", resource: \"secret/data/orders/{name}\", broker: vault, credential_headers: { token: x-vault-token } }\n",
        ),
        false,
        &["--ipt-config", &ipt.display().to_string()],
    );

    let files = dir.join("files");
    std::fs::create_dir_all(files.join("api")).unwrap();
    std::fs::write(files.join("api/token"), format!("{SECRET}\n")).unwrap();
    let salt = dir.join("salt");
    std::fs::write(&salt, [7u8; 32]).unwrap();
    let audit_ledger = dir.join("secrets-audit.jsonl");
    let secrets = dir.join("secrets.yaml");
    std::fs::write(
        &secrets,
        format!(
            "stores:\n  files: {{ backend: file, dir: \"{}\", mount: creds }}\nrefs:\n  api_token: {{ store: files, path: api/token, policy: egress }}\npolicies:\n  egress: {{ allowed_principals: [orders] }}\nprincipals:\n  - {{ match: \"spiffe://example.org/orders\", principal: orders }}\naudit: {{ ledger: \"{}\", tenant: soak, salt_file: \"{}\", signing_key_file: \"{}\" }}\n",
            files.display(),
            audit_ledger.display(),
            salt.display(),
            private.display()
        ),
    )
    .unwrap();
    let api = EchoApp::start(dir, "external-api", 200);
    let orders_app = EchoApp::start(dir, "orders-app", 200);
    let orders = Sidecar::start_egress(
        dir,
        &root,
        orders_app.port,
        &format!(
            "outbound:\n  destinations:\n    - {{ host: billing, address: \"127.0.0.1:{}\", spiffe_id: \"{BILLING}\" }}\n  egress:\n    - {{ host: api.example.com, address: \"127.0.0.1:{}\", secret: api_token, inject: {{ as: bearer }} }}\n",
            billing.inbound, api.port
        ),
        &secrets,
    );
    World {
        _bao: bao,
        root,
        billing,
        orders,
        _apps: vec![billing_app, api, orders_app],
        ipt_ledger,
        audit_ledger,
        dir: dir.to_owned(),
    }
}

fn main() {
    let args = Args::parse();
    let dir = args.dir.clone().unwrap_or_else(|| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ephemera_tests::target_dir()
            .join("soak")
            .join(stamp.to_string())
    });
    std::fs::create_dir_all(&dir).unwrap();
    let world = start(&dir);
    let duration = Duration::from_secs(args.minutes * 60);
    eprintln!(
        "soak: {} min, {} req/s of each of 5 kinds, rotation every {} s; in {}",
        args.minutes,
        args.rate,
        args.rotate_secs,
        dir.display()
    );

    let mint = |root: &Root| root.mint("orders", BILLING, &["--ttl", "300"]);
    let caller = Arc::new(Mutex::new(mint(&world.root)));
    let forged = world
        .root
        .mint("orders", "spiffe://example.org/other", &["--ttl", "3600"]);
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let begin = Instant::now();
    let (billing_in, orders_out) = (world.billing.inbound, world.orders.outbound.unwrap());

    let mut threads = Vec::new();
    for kind in Kind::ALL {
        let (caller, samples, stop, forged) = (
            caller.clone(),
            samples.clone(),
            stop.clone(),
            forged.clone(),
        );
        let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
        threads.push(std::thread::spawn(move || {
            let mut next = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let token = match kind {
                    Kind::Invalid => forged.clone(),
                    _ => caller.lock().unwrap().clone(),
                };
                let auth = format!("Bearer {token}");
                let sent = Instant::now();
                let status = match kind {
                    Kind::Valid | Kind::Invalid => {
                        get(
                            billing_in,
                            &format!("/plain/{n}"),
                            &[("authorization", &auth)],
                        )
                        .status
                    }
                    Kind::Transaction => {
                        get(
                            billing_in,
                            &format!("/orders/{n}"),
                            &[("authorization", &auth)],
                        )
                        .status
                    }
                    Kind::Egress => get(orders_out, "/v1/x", &[("host", "api.example.com")]).status,
                    Kind::Minted => {
                        get(orders_out, &format!("/plain/{n}"), &[("host", "billing")]).status
                    }
                };
                samples.lock().unwrap().push(Sample {
                    at: begin.elapsed().as_secs_f64(),
                    kind,
                    status,
                    micros: sent.elapsed().as_micros() as u64,
                });
                // A fixed rate: a late request is not made up for.
                next += interval;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        }));
    }

    let mut readings = Vec::new();
    let mut rotations = 0u64;
    let mut next_rotation = Duration::from_secs(args.rotate_secs);
    let mut next_reading = Duration::ZERO;
    let mut mint_at = None;
    while begin.elapsed() < duration {
        let elapsed = begin.elapsed();
        if mint_at.is_some_and(|at| elapsed >= at) {
            *caller.lock().unwrap() = mint(&world.root);
            mint_at = None;
        }
        if elapsed >= next_reading {
            let (bs, be) = pids(&world.billing);
            let (os, oe) = pids(&world.orders);
            readings.push(Reading {
                at: elapsed.as_secs_f64(),
                procs: vec![
                    ("billing shim", rss_kib(bs), fds(bs)),
                    ("billing envoy", rss_kib(be), fds(be)),
                    ("orders shim", rss_kib(os), fds(os)),
                    ("orders envoy", rss_kib(oe), fds(oe)),
                ],
            });
            next_reading += Duration::from_secs(10);
        }
        if elapsed >= next_rotation {
            let service = if rotations.is_multiple_of(2) {
                "orders"
            } else {
                "billing"
            };
            world.root.identity("rotate", service, &[]);
            if service == "orders" {
                // As a sidecar would: the new key signs only once billing
                // can have read the bundle naming it.
                mint_at = Some(elapsed + ACTIVATION);
            }
            rotations += 1;
            next_rotation += Duration::from_secs(args.rotate_secs);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    // Let the last transactions close before the ledgers are read.
    std::thread::sleep(Duration::from_secs(2));

    let report = report(
        &args,
        &world,
        &samples.lock().unwrap(),
        &readings,
        rotations,
    );
    print!("{}", report.text);
    std::fs::write(dir.join("report.md"), &report.text).unwrap();
    let logs: Vec<String> = [&world.billing.proc, &world.orders.proc]
        .iter()
        .flat_map(|p: &&Proc| [p.stdout(), p.stderr()])
        .collect();
    let leaked = logs
        .iter()
        .any(|l| l.contains(SECRET) || l.contains(forged.as_str()));
    if leaked {
        println!("FAIL: a secret or token appeared in a sidecar's output");
    }
    std::process::exit(if report.pass && !leaked { 0 } else { 1 });
}

struct Report {
    text: String,
    pass: bool,
}

fn report(
    args: &Args,
    world: &World,
    samples: &[Sample],
    readings: &[Reading],
    rotations: u64,
) -> Report {
    let mut out = String::new();
    let mut pass = true;
    let _ = writeln!(
        out,
        "# Soak: {} min, {} req/s of each kind, {} identity rotations\n",
        args.minutes, args.rate, rotations
    );
    let _ = writeln!(
        out,
        "## Answers\n\n| kind | requests | expected | unexpected |\n| --- | ---: | ---: | --- |"
    );
    for kind in Kind::ALL {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.kind == kind).collect();
        let mut unexpected: BTreeMap<u16, usize> = BTreeMap::new();
        for s in &mine {
            if s.status != kind.expected() {
                *unexpected.entry(s.status).or_default() += 1;
            }
        }
        if !unexpected.is_empty() {
            pass = false;
        }
        let _ = writeln!(
            out,
            "| {kind:?} | {} | {} | {:?} |",
            mine.len(),
            kind.expected(),
            unexpected
        );
    }

    let _ = writeln!(
        out,
        "\n## Latency per minute (all kinds, ms)\n\n| minute | requests | p50 | p99 |\n| ---: | ---: | ---: | ---: |"
    );
    let minutes = args.minutes.max(1);
    let mut p99s = Vec::new();
    for m in 0..minutes {
        let mut lat: Vec<u64> = samples
            .iter()
            .filter(|s| s.at >= (m * 60) as f64 && s.at < ((m + 1) * 60) as f64)
            .map(|s| s.micros)
            .collect();
        lat.sort_unstable();
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        p99s.push(p99);
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.2} |",
            m + 1,
            lat.len(),
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0
        );
    }

    let _ = writeln!(out, "\n## Memory (RSS MiB) and open descriptors\n");
    let names: Vec<&str> = readings
        .first()
        .map(|r| r.procs.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "| s | {} |\n| ---: |{}",
        names.join(" | "),
        " ---: |".repeat(names.len())
    );
    for r in readings.iter().filter(|r| (r.at as u64) % 60 < 10) {
        let cells: Vec<String> = r
            .procs
            .iter()
            .map(|(_, rss, fd)| format!("{:.1} / {fd}", *rss as f64 / 1024.0))
            .collect();
        let _ = writeln!(out, "| {:.0} | {} |", r.at, cells.join(" | "));
    }
    // Flat: after warm-up (the first fifth of the run, at most 2 minutes),
    // the last readings' mean stays within 5 % (at least 4 MiB) of the
    // warm-up reading.
    let warm = (duration_secs(args) / 5.0).min(120.0);
    let _ = writeln!(
        out,
        "\n| process | after warm-up ({warm:.0} s) MiB | last minute MiB | growth | fds then / end |\n| --- | ---: | ---: | ---: | --- |"
    );
    for (i, name) in names.iter().enumerate() {
        let Some(base) = readings.iter().find(|r| r.at >= warm) else {
            continue;
        };
        let tail: Vec<&Reading> = readings
            .iter()
            .filter(|r| r.at >= duration_secs(args) - 60.0)
            .collect();
        let end = tail.iter().map(|r| r.procs[i].1).sum::<u64>() / tail.len().max(1) as u64;
        let start_rss = base.procs[i].1;
        let growth = end as f64 - start_rss as f64;
        let allowed = (start_rss as f64 * 0.05).max(4096.0);
        let flat = growth <= allowed;
        pass &= flat;
        let last_fds = readings.last().map_or(0, |r| r.procs[i].2);
        let _ = writeln!(
            out,
            "| {name} | {:.1} | {:.1} | {:+.1} MiB {} | {} / {} |",
            start_rss as f64 / 1024.0,
            end as f64 / 1024.0,
            growth / 1024.0,
            if flat { "(flat)" } else { "(GROWS)" },
            base.procs[i].2,
            last_fds
        );
    }
    let first = p99s.first().copied().unwrap_or(0);
    let last = p99s.last().copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "\np99 drift: first minute {:.2} ms, last minute {:.2} ms",
        first as f64 / 1000.0,
        last as f64 / 1000.0
    );

    let _ = writeln!(out, "\n## Ledgers\n");
    for (name, path) in [
        ("transactions", &world.ipt_ledger),
        ("secrets audit", &world.audit_ledger),
    ] {
        let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
        match verify(&world.dir, path) {
            Ok(records) => {
                let _ = writeln!(
                    out,
                    "- {name}: {records} records, {:.1} MiB, chain and signatures verify; \
                     longest pause between appends {} ms",
                    bytes as f64 / 1048576.0,
                    longest_pause_ms(path)
                );
            }
            Err(why) => {
                pass = false;
                let _ = writeln!(out, "- {name}: does NOT verify: {why}");
            }
        }
    }
    let _ = writeln!(out, "\n{}", if pass { "PASS" } else { "FAIL" });
    Report { text: out, pass }
}

/// The longest time between two consecutive records of a ledger (a stalled
/// disk shows here: a write waits for its `fdatasync`).
fn longest_pause_ms(ledger: &Path) -> u64 {
    let times: Vec<u64> = std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["at_ms"].as_u64())
        .collect();
    times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .max()
        .unwrap_or(0)
}

fn duration_secs(args: &Args) -> f64 {
    (args.minutes * 60) as f64
}
