//! Durable ledger appends per second with concurrent writers (group commit),
//! each append timed from the call until it is durable.
//!   cargo run --release -p ephemera-shim --example ledger_bench [WRITERS] [APPENDS_EACH] [DIR]
//! The last line is the same figures as JSON, for `bench/run`.

use std::time::{Duration, Instant};

use ephemera_shim::ledger::{Event, FileLedger, LedgerKey, TransactionEvent};

fn main() {
    let mut args = std::env::args().skip(1);
    let writers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let each: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!(
        "ephemera-ledger-bench-{}.jsonl",
        std::process::id()
    ));
    // Signed, as the shim runs it: one signature per batch.
    let key = LedgerKey::generate().expect("randomness");
    let (ledger, _) = FileLedger::open(&path, Some(key)).expect("open ledger");
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                (0..each)
                    .map(|i| {
                        let mut e = TransactionEvent::new(Event::Open, format!("{w:04}-{i:06}"));
                        e.caller = Some("spiffe://example.org/orders".into());
                        e.resource = Some("arn:aws:s3:::bucket/key".into());
                        e.action = Some("read".into());
                        let at = Instant::now();
                        ledger.append_blocking(e).expect("append");
                        at.elapsed()
                    })
                    .collect::<Vec<Duration>>()
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("writer"))
        .collect();
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies[((latencies.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6
    };
    let total = writers * each;
    let rate = total as f64 / secs;
    let per_sync = total as f64 / ledger.syncs() as f64;
    println!(
        "{writers} writers x {each} appends: {total} durable appends in {secs:.2} s = {rate:.0} appends/s, {} fdatasyncs ({per_sync:.1} records per sync), append p50 {:.0} µs p99 {:.0} µs",
        ledger.syncs(),
        at(0.5),
        at(0.99)
    );
    println!(
        r#"{{"writers":{writers},"appends":{total},"per_s":{rate:.0},"syncs":{},"records_per_sync":{per_sync:.2},"p50_us":{:.0},"p99_us":{:.0}}}"#,
        ledger.syncs(),
        at(0.5),
        at(0.99)
    );
    let _ = std::fs::remove_file(&path);
}
