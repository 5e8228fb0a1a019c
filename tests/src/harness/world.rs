//! The world around the filter under test: provisioned identities (the
//! shim's own provisioning and identity code), a scripted shim that speaks
//! the shim's HTTP API, and the ledger it keeps.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use ephemera_core::filter::WorkloadIdentity;
use ephemera_core::filter::workload_identity::BundleFormatName;
use ephemera_core::ipt::wire::{CloseRequest, OpenRequest, OpenResponse};
use ephemera_core::token::{Minter, TokenVerifier, VerifyOptions};
use ephemera_core::{PrivateKey, RustCrypto, SpiffeId};
use ephemera_shim::identity::files::IdentityPaths;
use ephemera_shim::identity::provision::Root;
use ephemera_shim::identity::source::IdentitySource;
use serde::Deserialize;

use super::abi::Headers;

/// Which key signs a test token.
#[derive(Debug, Clone, Copy)]
pub enum Signer<'a> {
    /// The service's current key.
    Current(&'a str),
    /// The key the service had before its last rotation.
    Retired(&'a str),
    /// A fresh key no bundle holds.
    Stranger,
}

/// How one shim endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// At once, as the real shim would.
    #[default]
    Ok,
    /// After this many milliseconds.
    Late(u64),
    /// At once, with this status.
    Error(u16),
    /// Never (the call times out).
    Silent,
}

/// A scripted secret answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretAnswer {
    /// Released with this value.
    Value(String),
    /// Refused: not authorized.
    Deny,
}

/// How the scripted shim behaves.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShimScript {
    /// `GET /v1/identity`.
    pub identity: Mode,
    /// `POST /v1/transactions` and closes.
    pub transactions: Mode,
    /// `POST /v1/secrets/resolve`.
    pub secrets: Mode,
    /// Secrets by name.
    pub secret_values: BTreeMap<String, SecretAnswer>,
    /// A real shim on this Unix socket answers instead (proxy-wasm host
    /// only; its ledger is its own).
    pub live: Option<std::path::PathBuf>,
}

/// The trust domain of every harness world.
pub const TRUST_DOMAIN: &str = "example.org";

/// Identities, the scripted shim and its ledger.
pub struct World {
    _dir: Option<tempfile::TempDir>,
    root: Root,
    source: IdentitySource,
    /// How the shim answers.
    pub script: ShimScript,
    /// Ledger events, in order (`open <scope>`, `close`, `fail`).
    pub ledger: Vec<String>,
    opened: u32,
    retired: BTreeMap<String, PrivateKey>,
    /// Secret values and credentials the shim handed out: value → label.
    revealed: BTreeMap<String, String>,
}

/// An answer the shim gives: after `delay_ms`, or never.
pub enum Answer {
    /// `(delay_ms, status, headers, body)`.
    After(u64, u16, Headers, Vec<u8>),
    /// No answer.
    Never,
}

impl World {
    /// Provisions `workload` and `peers` in a fresh root.
    pub fn new(workload: &str, peers: &[&str]) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let root = Root::new(dir.path());
        root.init(TRUST_DOMAIN).map_err(|e| e.to_string())?;
        for name in std::iter::once(&workload).chain(peers) {
            root.add(name).map_err(|e| e.to_string())?;
        }
        Self::over(Some(dir), root, workload)
    }

    /// Uses an existing provisioning root (`ephemera identity init`) as it is.
    pub fn existing(root: &Path, workload: &str) -> Result<Self, String> {
        Self::over(None, Root::new(root), workload)
    }

    fn over(dir: Option<tempfile::TempDir>, root: Root, workload: &str) -> Result<Self, String> {
        let env = root.env(workload).map_err(|e| e.to_string())?;
        let paths = IdentityPaths::from_lookup(|k| {
            env.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, p)| p.clone())
        })
        .map_err(|e| e.to_string())?;
        let source = IdentitySource::new(paths, BundleFormatName::Spiffile);
        source.reload().map_err(|e| e.to_string())?;
        Ok(Self {
            _dir: dir,
            root,
            source,
            script: ShimScript::default(),
            ledger: Vec::new(),
            opened: 0,
            retired: BTreeMap::new(),
            revealed: BTreeMap::new(),
        })
    }

    /// The SPIFFE ID of a service in this world's trust domain.
    pub fn id(&self, name: &str) -> Result<SpiffeId, String> {
        let domain = self.source.served().map_or_else(
            || TRUST_DOMAIN.to_owned(),
            |s| s.identity.id().trust_domain().to_owned(),
        );
        SpiffeId::parse(&format!("spiffe://{domain}/{name}")).map_err(|e| format!("{name}: {e}"))
    }

    fn key_of(&self, name: &str) -> Result<PrivateKey, String> {
        let pem = std::fs::read_to_string(self.root.service_dir(name).join("key.pem"))
            .map_err(|e| format!("no key for {name}: {e}"))?;
        PrivateKey::from_pkcs8_pem(&pem).map_err(|e| e.to_string())
    }

    /// How a test token is signed.
    pub fn signing_key(&self, signer: Signer<'_>) -> Result<PrivateKey, String> {
        match signer {
            Signer::Current(name) => self.key_of(name),
            Signer::Retired(name) => self
                .retired
                .get(name)
                .cloned()
                .ok_or_else(|| format!("{name} has no retired key (rotate it first)")),
            Signer::Stranger => PrivateKey::generate().map_err(|e| e.to_string()),
        }
    }

    /// A JWT-SVID as `caller`, signed as `signer` says, for `audience`.
    pub fn token(
        &self,
        caller: &str,
        signer: Signer<'_>,
        audience: &SpiffeId,
        now: u64,
        ttl: u64,
    ) -> Result<String, String> {
        let key = self.signing_key(signer)?;
        Minter::new(self.id(caller)?, key)
            .mint(audience, now, ttl, None, &RustCrypto)
            .map_err(|e| e.to_string())
    }

    /// Verifies a token the filter minted: its `sub` and `aud`.
    pub fn verify_minted(
        &self,
        token: &str,
        audience: &SpiffeId,
        now: u64,
    ) -> Result<SpiffeId, String> {
        let served = self.source.served().ok_or("no identity")?;
        TokenVerifier::new(audience.clone(), VerifyOptions::default())
            .verify(token, &served.identity.bundle, now, &RustCrypto)
            .map(|v| v.caller)
            .map_err(|e| e.to_string())
    }

    /// Rotates a service's key keeping the old one in the bundle
    /// (`rotate`) or dropping it (`rotate-drop`), removes (`remove`) or adds
    /// (`add`) a service; the shim serves the new identity at once. A
    /// rotated or removed key stays available to sign test tokens.
    pub fn change(&mut self, op: &str, name: &str) -> Result<(), String> {
        if op.starts_with("rotate") || op == "remove" {
            let old = self.key_of(name)?;
            self.retired.insert(name.to_owned(), old);
        }
        match op {
            "rotate" => self.root.rotate(name, false).map(drop),
            "rotate-drop" => self.root.rotate(name, true).map(drop),
            "remove" => self.root.remove(name).map(drop),
            "add" => self.root.add(name).map(drop),
            other => return Err(format!("unknown identity change {other:?}")),
        }
        .map_err(|e| e.to_string())?;
        self.source.reload().map(drop).map_err(|e| e.to_string())
    }

    /// How the endpoint serving `path` answers.
    pub fn mode_for(&self, path: &str) -> Mode {
        if path == "/v1/identity" {
            self.script.identity
        } else if path.starts_with("/v1/transactions") {
            self.script.transactions
        } else {
            self.script.secrets
        }
    }

    /// The identity the shim serves now.
    pub fn served_identity(&self) -> Option<Arc<WorkloadIdentity>> {
        self.source.served().map(|s| s.identity)
    }

    /// The broker alone: a credential for one scope (no ledger record).
    pub fn issue(&mut self, open: &OpenRequest, now_ms: u64) -> OpenResponse {
        self.opened += 1;
        let n = self.opened;
        let credential = [
            ("token", format!("tx-token-{n}")),
            ("access_key_id", format!("ASIA-{n}")),
            ("secret_access_key", format!("tx-secret-{n}")),
            ("session_token", format!("tx-session-{n}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        self.reveal_credential(&credential);
        OpenResponse {
            transaction_id: open.transaction_id.clone(),
            credential,
            expires_at: now_ms / 1000 + 60,
            scope: format!("{}:{}", open.action, open.resource),
            blast_radius: format!("{} on {}", open.action, open.resource),
        }
    }

    /// Appends a ledger line.
    pub fn record(&mut self, line: impl Into<String>) {
        self.ledger.push(line.into());
    }

    fn reveal_credential(&mut self, credential: &BTreeMap<String, String>) {
        for (field, value) in credential {
            self.revealed
                .insert(value.clone(), format!("credential {field}"));
        }
    }

    /// `text` with every secret value and credential the shim handed out
    /// replaced by its label (`<secret NAME>`, `<credential FIELD>`) and
    /// every JWT by its subject and audience; a basic-auth header is
    /// decoded first, so its secret is caught too.
    pub fn redact(&self, text: &str) -> String {
        let mut out = redact_jwts(text);
        let mut revealed: Vec<_> = self
            .revealed
            .iter()
            .filter(|(v, _)| !v.is_empty())
            .collect();
        revealed.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        for (value, label) in revealed {
            out = out.replace(value.as_str(), &format!("<{label}>"));
        }
        if let Some(encoded) = out.strip_prefix("Basic ")
            && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded)
        {
            let decoded = String::from_utf8_lossy(&decoded);
            let inner = self.redact(&decoded);
            if inner != decoded {
                return format!("Basic base64({inner})");
            }
        }
        out
    }

    /// The answer for a secret: status and JSON body.
    pub fn secret_answer(&mut self, name: &str) -> (u16, serde_json::Value) {
        match self.script.secret_values.get(name) {
            Some(SecretAnswer::Value(v)) => {
                self.revealed.insert(v.clone(), format!("secret {name}"));
                (200, serde_json::json!({"value": v, "cache_ttl_secs": null}))
            }
            Some(SecretAnswer::Deny) => (
                403,
                serde_json::json!({"error": format!("not authorized for secret {name:?}")}),
            ),
            None => (
                404,
                serde_json::json!({"error": format!("unknown secret {name:?}")}),
            ),
        }
    }

    /// The shim's answer to an HTTP call from the filter: the shim's
    /// transaction service records `open` before answering and `close` or
    /// `fail` on close, as the real one does.
    pub fn answer(&mut self, headers: &Headers, body: &[u8], now_ms: u64) -> Answer {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let (method, path) = (header(":method"), header(":path"));
        if let Some(socket) = &self.script.live {
            let answer = forward(socket, headers, body);
            if let Answer::After(_, 200, _, reply) = &answer {
                self.reveal_live(&path, body, reply);
            }
            return answer;
        }
        let delay = match self.mode_for(&path) {
            Mode::Silent => return Answer::Never,
            Mode::Error(status) => {
                return Answer::After(0, status, Vec::new(), b"scripted failure\n".to_vec());
            }
            Mode::Late(ms) => ms,
            Mode::Ok => 0,
        };
        let json = |status: u16, value: serde_json::Value| {
            Answer::After(
                delay,
                status,
                vec![("content-type".into(), b"application/json".to_vec())],
                value.to_string().into_bytes(),
            )
        };
        match (method.as_str(), path.as_str()) {
            ("GET", "/v1/identity") => {
                let Some(served) = self.source.served() else {
                    return Answer::After(delay, 503, Vec::new(), Vec::new());
                };
                if header("if-none-match") == format!("\"{}\"", served.version) {
                    return Answer::After(delay, 304, Vec::new(), Vec::new());
                }
                Answer::After(delay, 200, Vec::new(), served.document.to_vec())
            }
            ("POST", "/v1/transactions") => {
                let Ok(open) = serde_json::from_slice::<OpenRequest>(body) else {
                    return json(400, serde_json::json!({"error": "malformed open"}));
                };
                let response = self.issue(&open, now_ms);
                self.record(format!("open {}", response.scope));
                json(200, serde_json::to_value(&response).unwrap_or_default())
            }
            ("POST", p) if p.starts_with("/v1/transactions/") && p.ends_with("/close") => {
                match serde_json::from_slice::<CloseRequest>(body) {
                    Ok(close) => {
                        let kind = if close.outcome.is_failure() {
                            "fail"
                        } else {
                            "close"
                        };
                        self.record(kind);
                        Answer::After(delay, 204, Vec::new(), Vec::new())
                    }
                    Err(_) => json(400, serde_json::json!({"error": "malformed close"})),
                }
            }
            ("POST", "/v1/secrets/resolve") => {
                let (status, value) = self.secret_answer(&requested_name(body));
                json(status, value)
            }
            _ => Answer::After(delay, 404, Vec::new(), Vec::new()),
        }
    }
}

impl World {
    /// Notes what a real shim handed out: a secret's value, or a
    /// transaction's credential.
    fn reveal_live(&mut self, path: &str, request: &[u8], reply: &[u8]) {
        match path {
            "/v1/secrets/resolve" => {
                let name = requested_name(request);
                if let Some(value) = serde_json::from_slice::<serde_json::Value>(reply)
                    .ok()
                    .and_then(|v| v["value"].as_str().map(str::to_owned))
                {
                    self.revealed.insert(value, format!("secret {name}"));
                }
            }
            "/v1/transactions" => {
                if let Ok(open) = serde_json::from_slice::<OpenResponse>(reply) {
                    self.reveal_credential(&open.credential);
                }
            }
            _ => {}
        }
    }
}

/// `text` with every JWT in it shown as `<jwt sub=… aud=…>`.
pub fn redact_jwts(text: &str) -> String {
    let is_part = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("eyJ") {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let end = from.find(|c| !is_part(c)).unwrap_or(from.len());
        let (word, after) = from.split_at(end);
        let parts: Vec<&str> = word.split('.').collect();
        let claims = (parts.len() == 3)
            .then(|| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(parts[1])
                    .ok()
            })
            .flatten()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        match claims {
            Some(c) => out.push_str(&format!(
                "<jwt sub={} aud={}>",
                c["sub"].as_str().unwrap_or("?"),
                c["aud"].as_str().unwrap_or("?")
            )),
            None => out.push_str(word),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The secret a resolve call names (empty when it names none).
fn requested_name(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A call sent on to a real shim; a failed exchange is no answer.
fn forward(socket: &std::path::Path, headers: &Headers, body: &[u8]) -> Answer {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| text(v));
    let mut sent: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| !k.starts_with(':'))
        .map(|(k, v)| (k.clone(), text(v)))
        .collect();
    sent.extend(get(":authority").map(|a| ("host".to_owned(), a)));
    let sent: Vec<(&str, &str)> = sent.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = crate::net::send(
        socket,
        &get(":method").unwrap_or_default(),
        &get(":path").unwrap_or_default(),
        &sent,
        &text(body),
    );
    if r.status == 0 {
        return Answer::Never;
    }
    let headers = r
        .headers
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    Answer::After(0, r.status, headers, r.body.into_bytes())
}

/// Where a built plugin is: `$EPHEMERA_WASM`, else the release build.
pub fn plugin_path() -> std::path::PathBuf {
    std::env::var_os("EPHEMERA_WASM").map_or_else(
        || {
            crate::target_dir()
                .join("wasm32-wasip1")
                .join("release")
                .join("ephemera_envoy.wasm")
        },
        std::path::PathBuf::from,
    )
}

/// True when `path` exists; the message says how to build it otherwise.
pub fn require(path: &Path) -> Result<(), String> {
    if path.exists() {
        Ok(())
    } else {
        Err(format!(
            "{} is missing: cargo build --release -p ephemera-envoy --target wasm32-wasip1",
            path.display()
        ))
    }
}
