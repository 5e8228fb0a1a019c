//! A real `redis-server` (Debian's) for tests, on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::net::free_port;
use crate::procs::Proc;

/// A running Redis.
pub struct Redis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Where it keeps its append-only file, when persistent.
    pub dir: PathBuf,
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
        std::fs::create_dir_all(dir).unwrap();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(dir);
        if persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let mut proc = Proc::spawn("redis", dir, &mut command);
        proc.wait_for_line("Ready to accept connections", Duration::from_secs(10));
        Self {
            port,
            dir: dir.to_owned(),
            proc,
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Kills it at once (no shutdown save); returns its port.
    pub fn kill(mut self) -> u16 {
        self.proc.signal_and_wait("KILL");
        self.port
    }
}
