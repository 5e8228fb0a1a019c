//! A throwaway PostgreSQL cluster (Debian's server) for tests: initialized
//! in a temporary directory and run as an unprivileged user (PostgreSQL
//! refuses to run as root), on 127.0.0.1 with trust authentication, or with
//! passwords for TCP connections.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::net::{free_port, wait_until};
use crate::procs::Proc;
use crate::{ATTACKER_UID, Run, run};

/// A running cluster; stopped, then its directory removed, on drop.
pub struct Postgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its data directory, also its Unix socket's directory.
    data: PathBuf,
    proc: Proc,
    _dir: tempfile::TempDir,
}

/// The directory of the newest installed PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (tests/setup.sh)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL server binary")
}

/// `program` run as the unprivileged user when this process is root.
fn unprivileged(program: PathBuf) -> Command {
    if rustix::process::geteuid().is_root() {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={ATTACKER_UID}"))
            .arg(format!("--regid={ATTACKER_UID}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Initializes and starts a cluster with superuser `postgres`, trusting
    /// every connection.
    pub fn start() -> Self {
        Self::start_with(None, None)
    }

    /// Initializes and starts a cluster that accepts TCP connections only
    /// over TLS, with a server certificate from `ca` (trust authentication).
    pub fn start_tls(ca: &crate::tls::TestCa) -> Self {
        Self::start_with(None, Some(ca))
    }

    /// Initializes and starts a cluster whose TCP connections need a
    /// password (SCRAM); superuser `postgres` has `password`.
    pub fn start_with_password(password: &str) -> Self {
        let pg = Self::start_with(Some(password), None);
        pg.psql(
            "postgres",
            &format!("ALTER USER postgres PASSWORD '{password}'"),
        )
        .ok();
        pg
    }

    fn start_with(password: Option<&str>, tls: Option<&crate::tls::TestCa>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        if rustix::process::geteuid().is_root() {
            // The unprivileged user must reach and own the cluster.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let uid = Some(rustix::process::Uid::from_raw(ATTACKER_UID));
            let gid = Some(rustix::process::Gid::from_raw(ATTACKER_UID));
            rustix::fs::chown(&data, uid, gid).unwrap();
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let bin = bin_dir();
        run(unprivileged(bin.join("initdb"))
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                if password.is_some() {
                    "--auth-host=scram-sha-256"
                } else {
                    "--auth-host=trust"
                },
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data))
        .ok();
        if let Some(ca) = tls {
            let (cert, key) = ca.server_cert();
            for (from, to) in [(&cert, "server.pem"), (&key, "server.key")] {
                let to = data.join(to);
                std::fs::copy(from, &to).unwrap();
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
                if rustix::process::geteuid().is_root() {
                    let id = Some(rustix::process::Uid::from_raw(ATTACKER_UID));
                    let gid = Some(rustix::process::Gid::from_raw(ATTACKER_UID));
                    rustix::fs::chown(&to, id, gid).unwrap();
                }
            }
            let hba = data.join("pg_hba.conf");
            let rules = std::fs::read_to_string(&hba).unwrap();
            std::fs::write(&hba, format!("hostnossl all all 0.0.0.0/0 reject\n{rules}")).unwrap();
            let conf = data.join("postgresql.conf");
            let settings = std::fs::read_to_string(&conf).unwrap();
            std::fs::write(
                &conf,
                format!("{settings}\nssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n"),
            )
            .unwrap();
        }
        let port = free_port();
        let proc = launch(dir.path(), &data, port);
        Self {
            port,
            data,
            proc,
            _dir: dir,
        }
    }

    /// Stops the server (fast shutdown: sessions are ended, committed data
    /// stays).
    pub fn stop(&mut self) {
        self.proc.signal_and_wait("INT");
    }

    /// Starts the stopped server again, on the same port with the same data.
    pub fn restart(&mut self) {
        self.proc = launch(self._dir.path(), &self.data, self.port);
    }

    /// `postgres://<user>@127.0.0.1:<port>/postgres`.
    pub fn url(&self, user: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs `sql` with `psql` as `user` over the Unix socket, where every
    /// user is trusted (stops at the first error).
    pub fn psql(&self, user: &str, sql: &str) -> Run {
        run(Command::new("psql")
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-U", user])
            .args(["-d", "postgres", "-c", sql]))
    }
}

/// Runs the server on `data` and waits until it accepts connections.
fn launch(dir: &std::path::Path, data: &std::path::Path, port: u16) -> Proc {
    let bin = bin_dir();
    let mut command = unprivileged(bin.join("postgres"));
    command
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-k")
        .arg(data);
    let proc = Proc::spawn("postgres", dir, &mut command);
    let ready = wait_until(Duration::from_secs(20), || {
        Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(ready.is_some(), "PostgreSQL up: {}", proc.stderr());
    proc
}
