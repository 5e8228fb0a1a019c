//! Helpers for ephemera's end-to-end tests: where the built binaries and the
//! project's Python tools are, and how to run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// The `ephemera` binary: `$EPHEMERA_BIN`, else the one built by
/// `cargo build -p ephemera-shim`.
pub fn ephemera_bin() -> PathBuf {
    let path = std::env::var_os("EPHEMERA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug").join("ephemera"));
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p ephemera-shim` (tests/run.sh does)",
        path.display()
    );
    path
}

/// The project venv's Python, with the reference tools installed by tests/run.sh.
pub fn python() -> PathBuf {
    let path = std::env::var_os("EPHEMERA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv").join("bin").join("python"));
    assert!(
        path.exists(),
        "{} is missing: run tests/run.sh once to create the project venv",
        path.display()
    );
    path
}

/// A program's result with text output.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Stdout without the trailing newline; panics unless the run succeeded.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "command failed: {}", self.stderr);
        self.stdout.trim_end()
    }
}

/// Runs `command`, capturing output.
pub fn run(command: &mut Command) -> Run {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    Run::from(output)
}

/// The unprivileged uid and gid a local attacker runs as (`nobody`).
pub const ATTACKER_UID: u32 = 65534;

/// Runs `program ARGS…` as [`ATTACKER_UID`] with no supplementary groups:
/// a local process that is neither the shim's nor Envoy's user. Needs root
/// (the test command runs as root; root itself passes every mode check, so
/// attacks are never tried as root).
pub fn as_attacker(program: &str, args: &[&str]) -> Run {
    assert!(
        rustix::process::geteuid().is_root(),
        "playing a local attacker needs root, to switch to uid {ATTACKER_UID}"
    );
    run(Command::new("setpriv")
        .arg(format!("--reuid={ATTACKER_UID}"))
        .arg(format!("--regid={ATTACKER_UID}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(program)
        .args(args))
}

/// `ephemera ARGS…` with the given extra environment.
pub fn ephemera(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(ephemera_bin());
    command.args(args);
    for var in [
        "SPIFFILE_DIR",
        "SPIFFILE_ID_FILE",
        "SPIFFILE_KEY_FILE",
        "SPIFFILE_BUNDLE_FILE",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    run(&mut command)
}

/// The spiffile reference implementation (`tests/peers/spiffile_peer.py`).
pub fn spiffile_peer(args: &[&str]) -> Run {
    let script = repo_root().join("tests/peers/spiffile_peer.py");
    run(Command::new(python()).arg(script).args(args))
}

/// The environment `ephemera identity env ROOT NAME` prints, as pairs.
pub fn service_env(root: &Path, name: &str) -> Vec<(String, String)> {
    let root = root.to_string_lossy();
    ephemera(&["identity", "env", &root, name], &[])
        .ok()
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

pub mod harness;
pub mod k8s;
pub mod moto;
pub mod net;
pub mod openbao;
pub mod postgres;
pub mod procs;
pub mod redis;
pub mod tls;
pub mod tmpfs;
pub mod workload;
