//! Running the `ephemera` binary in the shim's integration tests.

use std::process::Command;

/// `ephemera ARGS…` → (exit code, stdout, stderr).
pub fn ephemera(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ephemera"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
