//! Strict validation of Kubernetes objects by real schemas: Kubernetes'
//! own through `kubernetes-validate`, Istio's CRDs (`tests/peers/validate_k8s.py`).

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::{Run, python, repo_root};

/// The validator's verdict on YAML documents: exit 0 when every object
/// passes, 1 (with `invalid KIND/NAME: WHY` lines) otherwise.
pub fn validate(yaml: &str) -> Run {
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/peers/validate_k8s.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the validator: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(yaml.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
