//! A real OpenBao dev server for tests, set up the way the shim expects:
//! a token role for transaction tokens and a least-privilege shim token.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::net::{Response, free_port, send, wait_until};
use crate::procs::Proc;
use crate::repo_root;

/// The shim's own policy: manage `ephemera-*` policies, create tokens through
/// the `ephemera` role, revoke by accessor. Nothing else.
pub const SHIM_POLICY: &str = r#"path "sys/policies/acl/ephemera-*" { capabilities = ["create", "update", "delete"] }
path "auth/token/create/ephemera" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
"#;

/// A running OpenBao dev server.
pub struct OpenBao {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The file holding the shim's token.
    pub shim_token_file: PathBuf,
    /// The shim's token.
    pub shim_token: String,
    /// The server process.
    pub proc: Proc,
}

impl OpenBao {
    /// Starts a dev server and configures role, shim policy and shim token.
    pub fn start(dir: &Path) -> Self {
        // A free port can be taken by someone else before the server binds
        // it: try a few.
        let mut last_log = String::new();
        let mut started = None;
        for _ in 0..3 {
            let port = free_port();
            let mut proc = Proc::spawn(
                &format!("openbao-{port}"),
                dir,
                Command::new(repo_root().join(".venv/bin/bao")).args([
                    "server",
                    "-dev",
                    "-dev-root-token-id=root",
                    &format!("-dev-listen-address=127.0.0.1:{port}"),
                ]),
            );
            let up = wait_until(Duration::from_secs(30), || {
                crate::net::get(port, "/v1/sys/health", &[]).status == 200
            });
            if up.is_some() {
                started = Some((port, proc));
                break;
            }
            last_log = proc.stderr();
            proc.signal_and_wait("KILL");
        }
        let Some((port, proc)) = started else {
            panic!("OpenBao did not start:\n{last_log}");
        };
        let mut bao = Self {
            port,
            shim_token_file: dir.join("shim-token"),
            shim_token: String::new(),
            proc,
        };
        bao.root("POST", "auth/token/roles/ephemera", r#"{"allowed_policies_glob":["ephemera-*"],"orphan":true,"renewable":false,"token_no_default_policy":true}"#).ok();
        let policy = serde_json::json!({ "policy": SHIM_POLICY }).to_string();
        bao.root("PUT", "sys/policies/acl/ephemera-shim", &policy)
            .ok();
        bao.shim_token = bao.new_shim_token();
        std::fs::write(&bao.shim_token_file, &bao.shim_token).unwrap_or_else(|e| panic!("{e}"));
        bao
    }

    /// A fresh token with the shim's policy (and nothing else), for an hour.
    pub fn new_shim_token(&self) -> String {
        let created = self
            .root(
                "POST",
                "auth/token/create",
                r#"{"policies":["ephemera-shim"],"no_default_policy":true,"ttl":"1h"}"#,
            )
            .ok()
            .json();
        created["auth"]["client_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A token that may only create keys under the KV v2 folder
    /// `secret/<folder>` (no read, no overwrite, no delete), as a ledger's
    /// checkpoint writer holds; also written to `file`.
    pub fn create_only_token(&self, folder: &str, file: &Path) -> String {
        let name = format!("create-only-{}", folder.replace('/', "-"));
        let policy = format!(r#"path "secret/data/{folder}/*" {{ capabilities = ["create"] }}"#);
        self.root(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            &serde_json::json!({ "policy": policy }).to_string(),
        )
        .ok();
        let body = serde_json::json!({"policies": [name], "no_default_policy": true, "ttl": "1h"});
        let created = self
            .root("POST", "auth/token/create", &body.to_string())
            .ok()
            .json();
        let token = created["auth"]["client_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        std::fs::write(file, &token).unwrap_or_else(|e| panic!("{e}"));
        token
    }

    /// The newest key under the KV v2 folder `secret/<folder>`.
    pub fn newest_key(&self, folder: &str) -> Option<String> {
        let listed = self
            .root("GET", &format!("secret/metadata/{folder}?list=true"), "")
            .0;
        listed.json()["data"]["keys"]
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .max()
    }

    /// Whether `token` still exists, asked with the root token: the
    /// token's own uses are not spent, and a token whose policy was deleted
    /// but which was never revoked still counts as alive.
    pub fn token_exists(&self, token: &str) -> bool {
        let body = serde_json::json!({ "token": token }).to_string();
        let answer = self.root("POST", "auth/token/lookup", &body).0;
        match answer.status {
            200 => true,
            400 | 403 => false,
            other => panic!("token lookup answered {other}: {}", answer.body),
        }
    }

    /// How many tokens exist (accessors, listed with the root token).
    pub fn token_count(&self) -> usize {
        self.root("LIST", "auth/token/accessors", "").ok().json()["data"]["keys"]
            .as_array()
            .map_or(0, Vec::len)
    }

    /// A request with the root token.
    pub fn root(&self, method: &str, path: &str, body: &str) -> Checked {
        self.with_token("root", method, path, body)
    }

    /// A request with any token.
    pub fn with_token(&self, token: &str, method: &str, path: &str, body: &str) -> Checked {
        Checked(send(
            self.port,
            method,
            &format!("/v1/{path}"),
            &[
                ("x-vault-token", token),
                ("content-type", "application/json"),
            ],
            body,
        ))
    }
}

/// A response that can be asserted successful.
pub struct Checked(pub Response);

impl Checked {
    /// The response; panics unless 2xx.
    pub fn ok(self) -> Response {
        assert!(
            (200..300).contains(&self.0.status),
            "OpenBao answered {}: {}",
            self.0.status,
            self.0.body
        );
        self.0
    }
}
