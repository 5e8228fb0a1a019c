//! A real `redis-server` (Debian's) for tests, on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::net::free_port;
use crate::procs::Proc;
use crate::tls::TestCa;

/// A running Redis.
pub struct Redis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Where it keeps its append-only file, when persistent.
    pub dir: PathBuf,
    /// The CA its TLS certificate chains to, when it speaks only TLS.
    tls_ca: Option<PathBuf>,
    password: Option<String>,
    proc: Proc,
}

impl Redis {
    /// Starts Redis on a free port, keeping its data in `dir` with
    /// `appendfsync always` when `persistent`, in memory only otherwise.
    pub fn start(dir: &Path, persistent: bool) -> Self {
        Self::start_on(dir, free_port(), persistent)
    }

    /// As [`Redis::start`], on `port` (a restart on the same address).
    pub fn start_on(dir: &Path, port: u16, persistent: bool) -> Self {
        let mut command = Self::command(dir);
        command.args(["--port", &port.to_string()]);
        if persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        Self::spawn(dir, port, command, None, None)
    }

    /// Redis speaking only TLS (a server certificate from `ca`) and
    /// requiring `password`, in memory only.
    pub fn start_tls(dir: &Path, ca: &TestCa, password: &str) -> Self {
        let port = free_port();
        let (cert, key) = ca.server_cert();
        let mut command = Self::command(dir);
        command
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca.cert)
            .args(["--tls-auth-clients", "no", "--requirepass", password])
            .args(["--appendonly", "no"]);
        Self::spawn(
            dir,
            port,
            command,
            Some(ca.cert.clone()),
            Some(password.to_owned()),
        )
    }

    fn command(dir: &Path) -> Command {
        std::fs::create_dir_all(dir).unwrap();
        let mut command = Command::new("redis-server");
        command
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(dir);
        command
    }

    fn spawn(
        dir: &Path,
        port: u16,
        mut command: Command,
        tls_ca: Option<PathBuf>,
        password: Option<String>,
    ) -> Self {
        let mut proc = Proc::spawn("redis", dir, &mut command);
        proc.wait_for_line("Ready to accept connections", Duration::from_secs(10));
        Self {
            port,
            dir: dir.to_owned(),
            tls_ca,
            password,
            proc,
        }
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://…` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(ca) = &self.tls_ca {
            command.arg("--tls").arg("--cacert").arg(ca);
        }
        if let Some(password) = &self.password {
            command.env("REDISCLI_AUTH", password);
        }
        let out = command.args(args).output().expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Kills it at once (no shutdown save); returns its port.
    pub fn kill(mut self) -> u16 {
        self.proc.signal_and_wait("KILL");
        self.port
    }
}
