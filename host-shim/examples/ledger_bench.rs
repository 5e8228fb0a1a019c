//! Durable ledger appends per second with concurrent writers (group commit).
//!   cargo run --release -p ephemera-shim --example ledger_bench [WRITERS] [APPENDS_EACH] [DIR]

use std::time::Instant;

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
                for i in 0..each {
                    let mut e = TransactionEvent::new(Event::Open, format!("{w:04}-{i:06}"));
                    e.caller = Some("spiffe://example.org/orders".into());
                    e.resource = Some("arn:aws:s3:::bucket/key".into());
                    e.action = Some("read".into());
                    ledger.append_blocking(e).expect("append");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let secs = start.elapsed().as_secs_f64();
    let total = writers * each;
    println!(
        "{writers} writers x {each} appends: {total} durable appends in {secs:.2} s = {:.0} appends/s, {} fdatasyncs ({:.1} records per sync)",
        total as f64 / secs,
        ledger.syncs(),
        total as f64 / ledger.syncs() as f64
    );
    let _ = std::fs::remove_file(&path);
}
