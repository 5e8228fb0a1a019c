//! moto's server for tests, with IAM checks on and the role the STS broker
//! assumes (`tests/peers/moto_setup.py`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::net::{free_port, get, wait_until};
use crate::procs::Proc;
use crate::{python, repo_root, run};

/// A running moto server.
pub struct Moto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// What the setup made: `role_arn`, `access_key_id`, `secret_access_key`.
    pub keys: Value,
    _proc: Proc,
}

impl Moto {
    /// Starts moto; the four set-up calls run unauthenticated, every later
    /// request is checked: SigV4, the role's trust policy, the user's policy.
    pub fn start(dir: &Path) -> Self {
        let port = free_port();
        let proc = Proc::spawn(
            "moto",
            dir,
            Command::new(repo_root().join(".venv/bin/moto_server"))
                .args(["-p", &port.to_string()])
                .env("INITIAL_NO_AUTH_ACTION_COUNT", "4"),
        );
        wait_until(Duration::from_secs(20), || {
            get(port, "/moto-api/", &[]).status != 0
        })
        .expect("moto up");
        let setup = run(Command::new(python())
            .arg(repo_root().join("tests/peers/moto_setup.py"))
            .arg(format!("http://127.0.0.1:{port}")));
        Self {
            port,
            keys: serde_json::from_str(setup.ok()).unwrap_or_else(|e| panic!("{e}")),
            _proc: proc,
        }
    }

    /// A field of [`Moto::keys`].
    pub fn key(&self, name: &str) -> &str {
        self.keys[name].as_str().unwrap_or_default()
    }
}
