//! Revocation fan-out through the bundle store: three sidecars (real Envoy,
//! real shim) follow the bundle's revisions in one PostgreSQL; an
//! `identity remove` published from another node's root stops the caller
//! at every Envoy, a shim cut off during the revocation enforces it when it
//! reconnects, and a shim that stays cut off stops vouching for its
//! identity, so its Envoy fails closed.

use std::time::{Duration, Instant};

use ephemera_tests::ephemera;
use ephemera_tests::net::{Relay, get, wait_until};
use ephemera_tests::postgres::Postgres;
use ephemera_tests::workload::{EchoApp, Root, Sidecar};

const SHIMS: &str = "ephemera_shim";
const PUBLISHER: &str = "ephemera_publisher";

/// The filter polls the shim every 200 ms and fails closed 3 s after its
/// last confirmation.
const FILTER: &str = "shim: { max_identity_age_ms: 3000 }\n";

fn status(port: u16, token: &str) -> u16 {
    get(port, "/", &[("authorization", &format!("Bearer {token}"))]).status
}

#[test]
fn a_removal_on_one_node_stops_the_caller_at_every_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.psql(
        "postgres",
        &format!("CREATE ROLE {SHIMS} LOGIN; CREATE ROLE {PUBLISHER} LOGIN"),
    )
    .ok();
    let schema = ephemera(&["identity", "schema"], &[]).ok().to_owned();
    pg.psql("postgres", &schema).ok();

    // The workloads' files come from one root; the operator works on a copy
    // of it on another node, so only the bundle store can carry its change.
    let services = ["orders", "billing", "inventory", "shipping"];
    let root = Root::new(&dir.path().join("root"), &services);
    let admin = dir.path().join("admin-root");
    ephemera_tests::run(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&root.dir)
            .arg(&admin),
    )
    .ok();
    let admin = admin.display().to_string();
    let publisher = pg.url(PUBLISHER);
    let published = ephemera(
        &["identity", "publish", &admin, "--postgres", &publisher],
        &[],
    );
    published.ok();
    assert!(
        published.stderr.contains("revision 1 published"),
        "{}",
        published.stderr
    );

    let app = EchoApp::start(dir.path(), "app", 200);
    // The third shim reaches PostgreSQL through a link the test can cut.
    let relay = Relay::start(pg.port);
    let urls = [
        pg.url(SHIMS),
        pg.url(SHIMS),
        format!("postgres://{SHIMS}@127.0.0.1:{}/postgres", relay.port),
    ];
    let sidecars: Vec<Sidecar> = services[1..]
        .iter()
        .zip(&urls)
        .map(|(service, url)| {
            Sidecar::start_with(
                dir.path(),
                &root,
                service,
                app.port,
                Some(FILTER),
                false,
                &["--bundle-postgres", url, "--bundle-max-age-ms", "2000"],
            )
        })
        .collect();
    let tokens: Vec<String> = services[1..]
        .iter()
        .map(|s| root.mint("orders", &format!("spiffe://example.org/{s}"), &[]))
        .collect();
    for (sidecar, token) in sidecars.iter().zip(&tokens) {
        assert_eq!(status(sidecar.inbound, token), 200);
    }

    relay.cut();
    let removed_at = Instant::now();
    let removed = ephemera(
        &[
            "identity",
            "remove",
            &admin,
            "orders",
            "--postgres",
            &publisher,
        ],
        &[],
    );
    removed.ok();
    assert!(
        removed.stderr.contains("revision 2 published"),
        "{}",
        removed.stderr
    );
    let first_401: Vec<Option<Duration>> = std::thread::scope(|s| {
        let waits: Vec<_> = sidecars[..2]
            .iter()
            .zip(&tokens)
            .map(|(sidecar, token)| {
                s.spawn(move || {
                    wait_until(Duration::from_secs(10), || {
                        status(sidecar.inbound, token) == 401
                    })
                    .map(|_| removed_at.elapsed())
                })
            })
            .collect();
        waits.into_iter().map(|w| w.join().unwrap()).collect()
    });
    println!("first 401 after the removal, connected shims: {first_401:?}");
    for at in &first_401 {
        assert!(
            at.is_some_and(|at| at < Duration::from_secs(3)),
            "every connected node refuses within about a second: {first_401:?}"
        );
    }
    assert_eq!(
        status(sidecars[2].inbound, &tokens[2]),
        200,
        "the cut-off node has not heard of it yet"
    );

    // Reconnected: it asks for what it missed.
    relay.restore();
    let restored_at = Instant::now();
    let caught_up = wait_until(Duration::from_secs(10), || {
        status(sidecars[2].inbound, &tokens[2]) == 401
    });
    println!("first 401 at the reconnected shim: {caught_up:?} after the link returned");
    assert!(caught_up.is_some(), "enforced on reconnect");
    assert!(restored_at.elapsed() < Duration::from_secs(5));

    // Cut off for good: its shim stops vouching, and its Envoy refuses
    // every caller once the identity in force is too old.
    let billing = root.mint("billing", "spiffe://example.org/shipping", &[]);
    assert_eq!(status(sidecars[2].inbound, &billing), 200);
    relay.cut();
    let cut_at = Instant::now();
    let closed = wait_until(Duration::from_secs(20), || {
        status(sidecars[2].inbound, &billing) == 503
    });
    println!(
        "fail closed {:?} after the link was cut",
        closed.map(|_| cut_at.elapsed())
    );
    assert!(closed.is_some(), "unconfirmed for too long: 503");
    assert_eq!(
        status(
            sidecars[0].inbound,
            &root.mint("billing", "spiffe://example.org/billing", &[])
        ),
        200,
        "connected nodes are unaffected"
    );
}
