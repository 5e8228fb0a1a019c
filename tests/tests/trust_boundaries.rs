//! The boundaries around the token checks, tried as an attacker would: a
//! process of another uid on the same machine (every loopback port is its
//! too, as in a pod), a browser page reaching loopback through DNS
//! rebinding, and a caller with a valid token for a weaker route.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use ephemera_tests::net::{free_port, get, request, send, wait_until};
use ephemera_tests::procs::Proc;
use ephemera_tests::workload::{
    EchoApp, Root, Sidecar, envoy_for_shim, ledger_key, serve, serve_secrets, stats,
};
use ephemera_tests::{as_attacker, ephemera, ephemera_bin};

const ORDERS: &str = "spiffe://example.org/orders";
const BILLING: &str = "spiffe://example.org/billing";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// A temporary directory every user can traverse, so that only ephemera's
/// own modes stand between an attacker and what it creates inside.
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `curl` over a Unix socket as the attacker: the exit code and what came back.
fn attacker_curl(socket: &Path, path: &str) -> (i32, String) {
    let url = format!("http://localhost{path}");
    let run = as_attacker(
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "--unix-socket",
            &socket.to_string_lossy(),
            &url,
        ],
    );
    (run.code, format!("{}{}", run.stdout, run.stderr))
}

#[test]
fn another_uid_can_neither_enter_the_shim_directory_nor_pass_the_peer_check() {
    let dir = open_tempdir();
    let root = Root::new(&dir.path().join("root"), &["billing"]);
    let shim = serve(dir.path(), &root, "billing", "shim", &[]);
    let run_dir = shim.socket.parent().unwrap();
    assert_eq!(mode(run_dir), 0o700, "the socket's directory is private");
    assert_eq!(mode(&shim.socket), 0o600);

    let (code, out) = attacker_curl(&shim.socket, "/v1/identity");
    assert_ne!(code, 0, "the attacker reached the shim: {out}");
    assert!(
        out.contains("Permission denied") || out.contains("Couldn't connect"),
        "{out}"
    );
    assert!(!out.contains("key_pem"));

    // A volume mounted too openly: the modes no longer stop the attacker,
    // the peer check still does (the connection closes unanswered).
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&shim.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, out) = attacker_curl(&shim.socket, "/v1/identity");
    assert_ne!(code, 0, "the attacker passed the peer check: {out}");
    assert!(!out.contains("key_pem"), "{out}");
    assert!(
        shim.proc
            .stderr()
            .contains("refused a connection from uid 65534"),
        "{}",
        shim.proc.stderr()
    );
    // The shim's own uid is served.
    let own = get(&shim.socket, "/v1/identity", &[]);
    assert_eq!(own.status, 200);
    assert!(own.body.contains("key_pem"));
}

#[test]
fn a_shim_refuses_a_socket_directory_others_can_enter() {
    let dir = open_tempdir();
    let root = Root::new(&dir.path().join("root"), &["billing"]);
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let listen = format!("unix:{}", open.join("shim.sock").display());
    let env = root.env("billing");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = ephemera(&["serve", "--listen", &listen], &env);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("must be entered only by the shim's user")
            && out.stderr.contains(&open.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(!open.join("shim.sock").exists(), "nothing was bound");
}

#[test]
fn tcp_listeners_must_be_loopback_and_carry_a_secret() {
    let dir = open_tempdir();
    let root = Root::new(&dir.path().join("root"), &["billing"]);
    let env = root.env("billing");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let port = free_port().to_string();
    for (listen, says) in [
        (format!("tcp:0.0.0.0:{port}"), "loopback"),
        (format!("tcp:10.0.0.1:{port}"), "loopback"),
        (format!("127.0.0.1:{port}"), "neither unix:PATH nor tcp:"),
        (format!("tcp:127.0.0.1:{port}"), "--secret-file"),
    ] {
        let out = ephemera(&["serve", "--listen", &listen], &env);
        assert_eq!(out.code, 2, "{listen}: {out:?}");
        assert!(out.stderr.contains(says), "{listen}: {}", out.stderr);
    }
}

#[test]
fn over_tcp_the_shim_answers_only_its_secret_its_name_and_json() {
    let dir = open_tempdir();
    let root = Root::new(&dir.path().join("root"), &["billing"]);
    let port = free_port();
    let secret_file = dir.path().join("shim-secret");
    let mut command = std::process::Command::new(ephemera_bin());
    command
        .args(["serve", "--listen", &format!("tcp:127.0.0.1:{port}")])
        .arg("--secret-file")
        .arg(&secret_file)
        .envs(root.env("billing"));
    let shim = Proc::spawn("shim-tcp", dir.path(), &mut command);
    wait_until(Duration::from_secs(10), || {
        secret_file.exists() && get(port, "/healthz", &[]).status != 0
    })
    .unwrap_or_else(|| panic!("shim up: {}", shim.stderr()));
    assert_eq!(mode(&secret_file), 0o600);
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let secret = secret.trim();
    assert_eq!(secret.len(), 64, "256 bits, hex");
    let bearer = format!("Bearer {secret}");

    // Without the secret: 401 and nothing else, to anyone.
    for headers in [
        vec![],
        vec![("authorization", "Bearer 0000")],
        vec![("authorization", secret)],
    ] {
        let r = get(port, "/v1/identity", &headers);
        assert_eq!(r.status, 401, "{headers:?}");
        assert!(
            r.body.is_empty() && !r.body.contains("key_pem"),
            "{}",
            r.body
        );
    }
    let url = format!("http://127.0.0.1:{port}/v1/identity");
    let stolen = as_attacker("curl", &["-s", "-w", "\n%{http_code}", &url]);
    assert!(
        stolen.stdout.ends_with("401") && !stolen.stdout.contains("key_pem"),
        "{stolen:?}"
    );

    // DNS rebinding: a page's requests carry its own Host and, for a
    // "simple" cross-origin POST, a non-JSON content type.
    let r = get(
        port,
        "/v1/identity",
        &[("authorization", &bearer), ("host", "attacker.example")],
    );
    assert_eq!(r.status, 421);
    assert!(!r.body.contains("key_pem"));
    let r = send(
        port,
        "POST",
        "/v1/transactions",
        &[("authorization", &bearer), ("content-type", "text/plain")],
        "{}",
    );
    assert_eq!(r.status, 415);

    for host in ["ephemera-shim", "localhost", &format!("127.0.0.1:{port}")] {
        let r = get(
            port,
            "/v1/identity",
            &[("authorization", &bearer), ("host", host)],
        );
        assert_eq!(r.status, 200, "{host}");
        assert!(r.body.contains("key_pem"));
    }
    assert!(!shim.stderr().contains(secret) && !shim.stdout().contains(secret));
}

#[test]
fn the_app_listener_serves_secrets_only_to_a_jwt_svid_and_never_the_key() {
    let dir = open_tempdir();
    let root = Root::new(&dir.path().join("root"), &["api"]);
    let files = dir.path().join("files");
    std::fs::create_dir_all(files.join("api")).unwrap();
    std::fs::write(files.join("api/token"), "app-listener-secret").unwrap();
    let config = dir.path().join("secrets.yaml");
    std::fs::write(
        &config,
        format!(
            "stores: {{ files: {{ backend: file, dir: \"{}\", mount: creds }} }}\nrefs: {{ api_token: {{ store: files, path: api/token, policy: own }} }}\npolicies: {{ own: {{ allowed_principals: [api] }} }}\nprincipals: [{{ match: \"spiffe://example.org/api\", principal: api }}]\n",
            files.display()
        ),
    )
    .unwrap();
    let shim = serve_secrets(dir.path(), &root, "api", &config);
    let body = r#"{"name":"api_token"}"#;
    let json = ("content-type", "application/json");

    // The workload itself, on the Envoy listener.
    let r = send(&shim.socket, "POST", "/v1/secrets/resolve", &[json], body);
    assert_eq!(r.status, 200);
    // Anyone on the app listener: no token, no secret; no key at all.
    let r = send(
        &shim.app_socket,
        "POST",
        "/v1/secrets/resolve",
        &[json],
        body,
    );
    assert_eq!(r.status, 401);
    assert!(!r.body.contains("app-listener-secret"));
    let r = get(&shim.app_socket, "/v1/identity", &[]);
    assert_eq!(r.status, 404);
    assert!(!r.body.contains("key_pem"));
    let r = send(&shim.app_socket, "POST", "/v1/transactions", &[json], "{}");
    assert_eq!(r.status, 404);
}

#[test]
fn a_sidecars_admin_and_shim_are_pipes_only_its_user_can_open() {
    let dir = open_tempdir();
    let root = Root::new(&dir.path().join("root"), &["billing"]);
    let app = EchoApp::start(dir.path(), "app", 200);
    let sidecar = Sidecar::start(dir.path(), &root, "billing", app.port, None, false);
    let ephemera_tests::net::Target::Unix(admin) = &sidecar.admin else {
        panic!("the admin is on TCP by default: {:?}", sidecar.admin);
    };
    let private = admin.parent().unwrap();
    assert_eq!(mode(private), 0o700);
    assert_eq!(mode(admin), 0o600);
    let bootstrap = std::fs::read_dir(private)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .expect("the bootstrap in the private directory");
    assert_eq!(mode(&bootstrap), 0o600);
    for socket in std::fs::read_dir(private)
        .unwrap()
        .map(|e| e.unwrap().path())
    {
        let (code, out) = attacker_curl(&socket, "/config_dump");
        assert_ne!(code, 0, "{} reached: {out}", socket.display());
        assert!(!out.contains("BEGIN") && !out.contains("key_pem"));
    }
    assert!(
        get(admin, "/ready", &[]).status == 200,
        "its own user is served"
    );
    use std::os::unix::fs::FileTypeExt as _;
    let sockets: Vec<_> = std::fs::read_dir(private)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().file_type().is_socket())
        .collect();
    assert_eq!(sockets.len(), 2, "Envoy's admin and the shim: {sockets:?}");
    for socket in &sockets {
        assert_eq!(mode(socket) & 0o077, 0, "{}", socket.display());
    }
}

#[test]
fn a_sidecar_stopped_by_sigterm_or_sigint_stops_its_envoy_too() {
    let dir = open_tempdir();
    let root = Root::new(&dir.path().join("root"), &["billing"]);
    let app = EchoApp::start(dir.path(), "app", 200);
    for signal in ["TERM", "INT"] {
        let mut sidecar = Sidecar::start(dir.path(), &root, "billing", app.port, None, false);
        let envoys: Vec<u32> = sidecar
            .proc
            .children()
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim().starts_with("envoy"))
            })
            .collect();
        assert_eq!(envoys.len(), 1, "one Envoy under the sidecar");
        let code = sidecar.proc.signal_and_wait(signal);
        assert_eq!(code, Some(0), "SIG{signal} is a clean stop");
        let gone = wait_until(Duration::from_secs(5), || {
            !Path::new(&format!("/proc/{}", envoys[0])).exists()
        });
        assert!(gone.is_some(), "Envoy outlived its sidecar (SIG{signal})");
        assert_eq!(
            get(sidecar.inbound, "/", &[]).status,
            0,
            "nothing listens after SIG{signal}"
        );
    }
}

const ROUTES: &str = r#"
inbound:
  unauthenticated: ["/healthz"]
  routes:
    - { path: /admin/*, allow: ["spiffe://example.org/ops"] }
    - { path: /*, allow: ["spiffe://example.org/*"] }
"#;

#[test]
fn a_weaker_routes_token_reaches_no_stronger_route_in_any_spelling() {
    let dir = open_tempdir();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let app = EchoApp::start(dir.path(), "app", 200);
    let sidecar = Sidecar::start(dir.path(), &root, "billing", app.port, Some(ROUTES), false);
    let token = root.mint("orders", BILLING, &["--ttl", "120"]);
    let auth = format!("Bearer {token}");
    let call = |path: &str| {
        request(
            sidecar.inbound,
            "GET",
            path,
            &[("authorization", auth.as_str())],
        )
        .status
    };
    assert_eq!(call("/orders/1"), 200, "the weaker route admits orders");
    for path in [
        "/admin/x",
        "/ADMIN/x",
        "/Admin/x",
        "/aDmIn/users",
        "//admin/x",
        "/./admin/x",
        "/x/../admin/x",
        "/%61dmin/x",
    ] {
        assert_eq!(call(path), 403, "{path}");
    }
    for path in [
        "/admin;x/y",
        "/admin%3Bx/y",
        "/admin%3bx/y",
        "/admin./x",
        "/admin%2E/x",
    ] {
        assert_eq!(call(path), 400, "{path}");
    }
    let seen: Vec<String> = app
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(seen, ["/orders/1"], "the app saw only the admitted call");

    // Envoy normalizes before the filter: merged slashes reach the app as
    // one path; escaped slashes are refused by Envoy itself (the filter's
    // bad_path counter does not move), `;` by the filter.
    let bad_path = || {
        sidecar
            .stats()
            .get("ephemera.inbound.rejected.bad_path")
            .copied()
            .unwrap_or(0)
    };
    let counted = bad_path();
    assert_eq!(call("//orders//2"), 200);
    assert_eq!(app.requests().pop().unwrap()["path"], "/orders/2");
    for path in [
        "/orders%2F..%2Fadmin/x",
        "/admin%2fx",
        "/orders%5C..%5Cadmin",
    ] {
        assert_eq!(call(path), 400, "{path}");
    }
    assert_eq!(bad_path(), counted, "Envoy refused these before the filter");
    assert_eq!(call("/orders;x/3"), 400);
    assert_eq!(bad_path(), counted + 1, "the filter refused this one");

    // An unauthenticated path in another case needs a token.
    assert_eq!(request(sidecar.inbound, "GET", "/HEALTHZ", &[]).status, 401);
    // On an unauthenticated path the token still does not reach the app.
    assert_eq!(call("/healthz"), 200);
    let last = app.requests().pop().unwrap();
    assert_eq!(last["path"], "/healthz");
    assert!(last["headers"].get("authorization").is_none(), "{last}");
    assert!(last["headers"].get("x-ephemera-caller").is_none(), "{last}");
}

#[test]
fn an_identity_the_shim_stops_confirming_goes_stale_and_nothing_passes() {
    let dir = open_tempdir();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let app = EchoApp::start(dir.path(), "app", 200);
    let shim = serve(dir.path(), &root, "billing", "shim", &[]);
    let config = "shim: { timeout_ms: 300, poll_ms: 200, max_identity_age_ms: 1500 }\n";
    let (_envoy, inbound, admin) = envoy_for_shim(dir.path(), app.port, &shim.socket, Some(config));
    let token = root.mint("orders", BILLING, &["--ttl", "120"]);
    let auth = format!("Bearer {token}");
    let call = || get(inbound, "/", &[("authorization", auth.as_str())]).status;
    wait_until(Duration::from_secs(10), || call() == 200).expect("identity loaded");

    // A frozen shim answers nothing: the filter cannot learn of a
    // revocation, so after max_identity_age_ms it stops judging.
    shim.proc.signal("STOP");
    let stale = wait_until(Duration::from_secs(10), || call() == 503);
    shim.proc.signal("CONT");
    let stale = stale.expect("the identity went stale");
    assert!(stale >= Duration::from_millis(800), "stale after {stale:?}");
    assert!(
        stats(admin)
            .get("ephemera.inbound.identity_stale")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{:?}",
        stats(admin)
    );
    wait_until(Duration::from_secs(10), || call() == 200).expect("fresh again");
    for r in app.requests() {
        assert_eq!(r["headers"]["x-ephemera-caller"], ORDERS, "{r}");
    }
}

#[test]
fn a_ledger_without_a_signing_key_or_with_a_second_writer_keeps_the_shim_from_starting() {
    let dir = open_tempdir();
    let root = Root::new(&dir.path().join("root"), &["billing"]);
    let env = root.env("billing");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ledger = dir.path().join("ledger.jsonl");
    let write_config = |name: &str, key: Option<&Path>| {
        let path = dir.path().join(name);
        let key = key
            .map(|k| format!(", signing_key_file: \"{}\"", k.display()))
            .unwrap_or_default();
        std::fs::write(
            &path,
            format!(
                "ledger: {{ path: \"{}\"{key} }}\nbrokers: {{}}\npolicy: []\n",
                ledger.display()
            ),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    };
    let listen = |n: u32| {
        format!(
            "unix:{}",
            dir.path().join(format!("run-{n}/shim.sock")).display()
        )
    };

    let unkeyed = write_config("unkeyed.yaml", None);
    let out = ephemera(
        &["serve", "--listen", &listen(1), "--ipt-config", &unkeyed],
        &env,
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no signing_key_file"), "{}", out.stderr);
    assert!(!ledger.exists(), "nothing was written");

    // A key in the ledger's own directory is the ledger writer's to replace.
    let beside = dir.path().join("beside.key");
    ephemera(
        &[
            "ledger",
            "keygen",
            &beside.to_string_lossy(),
            &dir.path().join("beside.pub").to_string_lossy(),
        ],
        &[],
    )
    .ok();
    let misplaced = write_config("misplaced.yaml", Some(&beside));
    let out = ephemera(
        &["serve", "--listen", &listen(2), "--ipt-config", &misplaced],
        &env,
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("outside the ledger's directory"),
        "{}",
        out.stderr
    );

    // One writer at a time.
    let (key, _) = ledger_key(dir.path());
    let keyed = write_config("keyed.yaml", Some(&key));
    let first = serve(
        dir.path(),
        &root,
        "billing",
        "shim-1",
        &["--ipt-config", &keyed],
    );
    assert_eq!(mode(&ledger), 0o600, "the ledger is owner-only");
    let mut second = Proc::spawn(
        "shim-2",
        dir.path(),
        std::process::Command::new(ephemera_bin())
            .args(["serve", "--listen", &listen(3), "--ipt-config", &keyed])
            .envs(root.env("billing")),
    );
    wait_until(Duration::from_secs(10), || !second.running()).expect("the second shim stops");
    assert!(
        second.stderr().contains("in use by another process"),
        "{}",
        second.stderr()
    );
    drop(first);
}
