//! Durable ledger appends per second with concurrent writers (group commit),
//! each append timed from the call until it is durable: in a file, or, when
//! TARGET is a `postgres://` URL, in that database's `ephemera_ledger` table.
//!   cargo run --release -p ephemera-shim --example ledger_bench [WRITERS] [APPENDS_EACH] [TARGET]
//! The last line is the same figures as JSON, for `bench/run`.

use std::time::{Duration, Instant};

use ephemera_shim::ledger::postgres_writer::{PostgresLedger, PostgresLedgerConfig};
use ephemera_shim::ledger::{Event, FileLedger, Ledger, LedgerKey, TransactionEvent};

fn entry(writer: usize, i: usize) -> TransactionEvent {
    let mut e = TransactionEvent::new(Event::Open, format!("{writer:04}-{i:06}"));
    e.caller = Some("spiffe://example.org/orders".into());
    e.resource = Some("arn:aws:s3:::bucket/key".into());
    e.action = Some("read".into());
    e
}

fn main() {
    let mut args = std::env::args().skip(1);
    let writers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let each: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let target = args
        .next()
        .unwrap_or_else(|| std::env::temp_dir().display().to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Signed, as the shim runs it: one signature per batch.
    let key = LedgerKey::generate().expect("randomness");
    let path = std::path::Path::new(&target).join(format!(
        "ephemera-ledger-bench-{}.jsonl",
        std::process::id()
    ));
    let ledger = if target.starts_with("postgres://") {
        let config = PostgresLedgerConfig {
            url: target.clone(),
            table: "ephemera_ledger".into(),
            writer: Some(format!("bench-{}-{writers}", std::process::id())),
            password_file: None,
            ca_file: None,
            timeout_ms: 10_000,
        };
        runtime
            .block_on(PostgresLedger::start(&config, Some(key)))
            .map(Ledger::Postgres)
            .expect("connect")
    } else {
        Ledger::File(FileLedger::open(&path, Some(key)).expect("open ledger").0)
    };
    let start = Instant::now();
    let mut latencies: Vec<Duration> = runtime.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    let mut times = Vec::with_capacity(each);
                    for i in 0..each {
                        let at = Instant::now();
                        ledger.append(entry(w, i)).await.expect("append");
                        times.push(at.elapsed());
                    }
                    times
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("writer"));
        }
        all
    });
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies[((latencies.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6
    };
    let total = writers * each;
    let rate = total as f64 / secs;
    let (syncs, what) = match &ledger {
        Ledger::File(l) => (l.syncs(), "fdatasyncs"),
        Ledger::Postgres(l) => (l.commits(), "commits"),
    };
    let per_sync = total as f64 / syncs as f64;
    println!(
        "{writers} writers x {each} appends: {total} durable appends in {secs:.2} s = {rate:.0} appends/s, {syncs} {what} ({per_sync:.1} records per sync), append p50 {:.0} µs p99 {:.0} µs",
        at(0.5),
        at(0.99)
    );
    println!(
        r#"{{"writers":{writers},"appends":{total},"per_s":{rate:.0},"syncs":{syncs},"records_per_sync":{per_sync:.2},"p50_us":{:.0},"p99_us":{:.0}}}"#,
        at(0.5),
        at(0.99)
    );
    let _ = std::fs::remove_file(&path);
}
